"""deploy/monitoring/: the alerts pass promtool and their unit tests, each has a runbook line,
the dashboard and the alerts read only metrics the services export, and compose and
Kubernetes wire Prometheus and Grafana to them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from services.cli import audit_metrics, monitoringdeploy
from tests.deploy.test_manifests import (
    HTTP_PORT,
    OPS_DOC,
    ROOT,
    SERVICES,
    Doc,
    find,
    k8s_validate,
    one,
    render,
)

MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "marketplace.rules.yaml"
RULE_TESTS = MONITORING / "rules-tests" / "marketplace.test.yaml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "marketplace.json"
# Grafana's variables, replaced by what they stand for so that promtool can parse the query.
GRAFANA_VARS = {"$__rate_interval": "5m", "$service": "orders"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
_METRIC = re.compile(r"\b((?:marketplace|process|python)_[a-z0-9_]+)\b")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool not found: `make system-packages` (Debian's prometheus package)"
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def exported(registry: CollectorRegistry) -> set[str]:
    """Every series name `registry` can expose (a histogram's _bucket, _sum and _count)."""
    names = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name} | {name + s for s in _SUFFIXES.get(kind, ())}
    return names


@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    """What the four services and the audit exporter export, from their own definitions."""
    import services.analytics.bootstrap
    import services.membership.bootstrap
    import services.orders.bootstrap
    import services.payments.bootstrap  # noqa: F401

    return exported(REGISTRY) | exported(audit_metrics.REGISTRY)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", ())]


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_names = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {a["alert"] for a in alerts()} <= tested_names, "an alert without a unit test"


def test_the_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """A threshold moved out of reach makes the unit tests fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules-tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "rules-tests" / RULE_TESTS.name)
    (tmp_path / "rules" / RULES.name).write_text(
        RULES.read_text().replace("marketplace_outbox_backlog) > 1000",
                                  "marketplace_outbox_backlog) > 1000000"))
    tested = promtool("test", "rules", str(tmp_path / "rules-tests" / RULE_TESTS.name))
    assert tested.returncode != 0 and "MarketplaceOutboxBacklog" in tested.stdout + tested.stderr


def test_the_prometheus_rule_is_generated_from_the_rules_file() -> None:
    for path, text in monitoringdeploy.generated().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run `python -m services.cli.monitoringdeploy --write`")
    rule = yaml.safe_load(monitoringdeploy.PROMETHEUS_RULE.read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert monitoringdeploy.main(["--check"]) == 0


def test_every_alert_has_a_runbook_line() -> None:
    text = OPS_DOC.read_text()
    assert "\n## Alerts\n" in text
    runbook = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    for alert in alerts():
        assert f"`{alert['alert']}`" in runbook, f"{alert['alert']} has no runbook line"
        assert alert["annotations"]["runbook"].endswith(f"({alert['alert']})")
        assert alert["labels"]["severity"] in {"page", "ticket"}


def test_alerts_and_dashboard_read_only_exported_metrics(
    metric_names: set[str], tmp_path: Path
) -> None:
    queries = [(a["alert"], a["expr"]) for a in alerts()] + dashboard_queries()
    assert len(queries) > 20
    for where, expr in queries:
        used = set(_METRIC.findall(expr))
        assert used, f"{where}: reads no marketplace metric: {expr}"
        assert used <= metric_names, f"{where}: {sorted(used - metric_names)} not exported"
    # Every dashboard query parses as PromQL: as recording rules, promtool checks them.
    records = []
    for i, (_, expr) in enumerate(dashboard_queries()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        records.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_shows_what_operations_watch() -> None:
    titles = {title for title, _ in dashboard_queries()}
    for needed in ("Request rate", "Errors (5xx) and shed (503 overload)", "Latency p50 / p99",
                   "Checkouts per second", "GMV per minute (CNY)", "Outbox backlog",
                   "Consumer lag and dead letters", "CPU per process"):
        assert needed in titles, needed
    dashboard = json.loads(DASHBOARD.read_text())
    service = next(v for v in dashboard["templating"]["list"] if v["name"] == "service")
    assert service["allValue"].split("|") == list(SERVICES)


def test_compose_runs_prometheus_and_grafana_on_deploy_monitoring(compose_model: Doc) -> None:
    services = compose_model["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    mounts = {v["target"]: Path(v["source"]) for v in prometheus["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/prometheus.yml"] == MONITORING / "prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == RULES.parent
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for name in SERVICES:
        assert jobs[name] == [f"{name}:{HTTP_PORT[name]}"], name
    checked = promtool("check", "config", str(MONITORING / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == MONITORING / "grafana" / "provisioning"
    provisioning = MONITORING / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards/marketplace.yaml").read_text())[
        "providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_kubernetes_scrapes_every_service_and_ships_alerts_and_dashboard(
    kubectl: Path, rendered: dict[str, list[Doc]]
) -> None:
    docs = render(kubectl, MONITORING)
    monitor = one(docs, "PodMonitor", "marketplace-services")["spec"]
    assert monitor["jobLabel"] == "app.kubernetes.io/name"
    [endpoint] = monitor["podMetricsEndpoints"]
    for name in SERVICES:  # the selector picks every service's pods, on their REST port
        pod = one(rendered["prod"], "Deployment", name)["spec"]["template"]
        assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == name
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports[endpoint["port"]] == HTTP_PORT[name] and endpoint["path"] == "/metrics"
    rule = one(docs, "PrometheusRule", "marketplace")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    dashboards = one(docs, "ConfigMap", "marketplace-grafana-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"]["marketplace.json"] == DASHBOARD.read_text()

    audit = one(docs, "Deployment", "audit")["spec"]["template"]
    audit_monitor = one(docs, "PodMonitor", "marketplace-audit")["spec"]
    assert audit_monitor["selector"]["matchLabels"].items() <= audit["metadata"]["labels"].items()
    container = audit["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", audit_metrics.__name__]
    assert {p["name"] for p in container["ports"]} == {
        e["port"] for e in audit_monitor["podMetricsEndpoints"]}
    for doc in docs:  # the core kinds validate strictly; the CRDs have no schema here
        if doc["kind"] not in ("PodMonitor", "PrometheusRule"):
            k8s_validate(doc)
    assert find(docs, "NetworkPolicy", "allow-audit-metrics-ingress")
