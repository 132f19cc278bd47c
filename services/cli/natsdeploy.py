"""The committed NATS configurations, generated from services/cli/natsauth.py.

    python -m services.cli.natsdeploy --write   # after changing users or permissions
    python -m services.cli.natsdeploy --check   # exit 1 if a committed file is stale

- `deploy/nats/nats.conf` (docker-compose.yml's single server): written whole; each password
  is a `$NATS_<USER>_PASSWORD` reference the server resolves from its environment.
- `deploy/nats/values.yaml` (the official Helm chart): only the blocks between
  `# BEGIN generated: <name>` and `# END generated: <name>` are rewritten: `config.merge`
  (the authorization block, passwords as the chart's `<< $VAR >>`) and `container.env` (each
  variable from the `nats-users` Secret). The rest of the file is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from services.cli.natsauth import USERS, env_passwords, helm_authorization, password_env
from services.cli.natsserver import nats_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CONF = ROOT / "deploy" / "nats" / "nats.conf"
HELM_VALUES = ROOT / "deploy" / "nats" / "values.yaml"
# The Secret in the `nats` namespace that holds every user's password, one key per user.
HELM_SECRET = "nats-users"

_COMPOSE_HEADER = """\
# NATS server for docker-compose.yml (single node). GENERATED from services/cli/natsauth.py by
# `python -m services.cli.natsdeploy --write`: change those, not this file. The Kubernetes
# cluster uses deploy/nats/values.yaml with the official Helm chart instead.
# Each password is read from the server's environment (NATS_<USER>_PASSWORD, passed by
# docker-compose.yml); the server refuses to start when one is missing.
# sync_interval: always fsyncs every write before the publish is acked, so an acked event
# survives power loss: the durability policy of the project (see docs/operations.md).
"""
# Slow consumers and big batches: defaults are fine. Lame duck: a stopping server hands its
# clients over gradually instead of dropping them all at once.
_COMPOSE_EXTRA = "lame_duck_duration: 30s\nlame_duck_grace_period: 10s\n"


def compose_conf() -> str:
    return nats_config(
        port=4222, monitor_port=8222, store_dir="/data", max_file_store="10GB",
        max_memory_store="256MB", users=env_passwords(), host="0.0.0.0",
        server_name="nats-compose", header=_COMPOSE_HEADER, extra=_COMPOSE_EXTRA,
    )  # fmt: skip


def helm_env() -> dict[str, Any]:
    """`container.env`: every user's password variable, from the `nats-users` Secret."""
    return {
        password_env(user): {"valueFrom": {"secretKeyRef": {"name": HELM_SECRET, "key": user}}}
        for user in USERS
    }


HELM_BLOCKS: dict[str, Callable[[], dict[str, Any]]] = {
    "config.merge": lambda: {"merge": {"authorization": helm_authorization()}},
    "container.env": lambda: {"env": helm_env()},
}


def render_values(text: str) -> str:
    """`text` (values.yaml) with every generated block rewritten from natsauth."""
    for name, block in HELM_BLOCKS.items():
        pattern = re.compile(
            rf"^(?P<indent> *)# BEGIN generated: {re.escape(name)}\n.*?"
            rf"^(?P=indent)# END generated: {re.escape(name)}\n",
            re.M | re.S,
        )
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"{HELM_VALUES.name} has no generated block {name!r}")
        indent = match["indent"]
        body = yaml.safe_dump(block(), sort_keys=False, width=1000)
        lines = "".join(f"{indent}{line}\n" for line in body.splitlines())
        replacement = f"{indent}# BEGIN generated: {name}\n{lines}{indent}# END generated: {name}\n"
        text = text[: match.start()] + replacement + text[match.end() :]
    return text


def generated() -> dict[Path, str]:
    """Each committed file and the text the generator makes of it now."""
    return {COMPOSE_CONF: compose_conf(), HELM_VALUES: render_values(HELM_VALUES.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.cli.natsdeploy")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated files")
    mode.add_argument("--check", action="store_true", help="exit 1 if one is out of date")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated().items() if path.read_text() != text]
    if args.write:
        for path, text in generated().items():
            path.write_text(text)
        print("\n".join(f"rewrote {p.relative_to(ROOT)}" for p in stale) or "up to date")
        return 0
    for path in stale:
        print(f"{path.relative_to(ROOT)} is stale: run python -m services.cli.natsdeploy --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
