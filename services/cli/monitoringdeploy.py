"""deploy/monitoring/prometheus-rule.yaml, generated from the plain rules file.

    python -m services.cli.monitoringdeploy --write   # after changing the alerts
    python -m services.cli.monitoringdeploy --check   # exit 1 if the committed file is stale

The alerts are written once, in deploy/monitoring/rules/marketplace.rules.yaml (what
docker-compose.yml's Prometheus loads and `promtool test rules` tests); the Prometheus
Operator's PrometheusRule for Kubernetes carries the same groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "marketplace.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheus-rule.yaml"

_HEADER = """\
# The marketplace's alerts for the Prometheus Operator. GENERATED from
# deploy/monitoring/rules/marketplace.rules.yaml by
# `python -m services.cli.monitoringdeploy --write`: change that file, not this one.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as `|` blocks, as in the rules file."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                   style="|" if "\n" in text else None)


_Dumper.add_representer(str, _text)


def prometheus_rule(rules_text: str) -> str:
    """The PrometheusRule carrying the rules file's groups as they are."""
    groups = yaml.safe_load(rules_text)["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "marketplace",
            "labels": {"app.kubernetes.io/part-of": "marketplace", "role": "alert-rules"},
        },
        "spec": {"groups": groups},
    }
    return _HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=120,
                               allow_unicode=True)


def generated() -> dict[Path, str]:
    return {PROMETHEUS_RULE: prometheus_rule(RULES.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.cli.monitoringdeploy",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the generated file")
    action.add_argument("--check", action="store_true", help="exit 1 if it is stale")
    ns = parser.parse_args(argv)
    stale = [path for path, text in generated().items()
             if not path.exists() or path.read_text() != text]
    if ns.write:
        for path, text in generated().items():
            path.write_text(text)
        return 0
    for path in stale:
        print(f"{path.relative_to(ROOT)} is stale: run `python -m services.cli.monitoringdeploy "
              "--write`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
