"""The Postgres connection budget of the production manifests, at the HPA maxima.

Per service: its role's pool in each PgBouncer instance of the Pooler (default_pool_size +
reserve_pool_size server connections, however many replicas share it), plus the direct
sessions every pod holds (services.common.runtime.SESSIONS_PER_PROCESS: the outbox relay),
for the most pods there can be (maxReplicas, plus the rolling update's surge). The sum,
with Postgres' reserved slots and headroom for the operator, backups, bootstrap and
operators' sessions, must fit max_connections. Rendered offline, as test_manifests does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.runtime import SESSIONS_PER_PROCESS
from services.common.settings import ServiceSettings
from tests.deploy.test_manifests import K8S, ROOT, SERVICES, Doc, one, render
from tests.deploy.test_manifests import kubectl as kubectl  # the fixture, shared

POSTGRES = ROOT / "deploy" / "postgres"
# Beyond superuser_reserved_connections: the operator's instance manager and metrics
# exporter, the db-bootstrap Job, the auditor and an operator's psql.
HEADROOM = 20


@dataclass(frozen=True)
class Budget:
    pooled: dict[str, int]  # per service: server connections through the pooler
    direct: dict[str, int]  # per service: sessions straight to the primary
    clients: int  # client connections into the pooler, every pod's request pool full

    @property
    def total(self) -> int:
        return sum(self.pooled.values()) + sum(self.direct.values())


def _load(name: str) -> Doc:
    (doc,) = yaml.safe_load_all((POSTGRES / name).read_text())
    return dict(doc)


@pytest.fixture(scope="module")
def prod(kubectl: Path) -> list[Doc]:
    return render(kubectl, K8S / "overlays" / "prod")


def _env(docs: list[Doc], name: str) -> dict[str, Any]:
    """What the service's container reads: its ConfigMaps, then its own env."""
    container = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env |= one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    return env | {e["name"]: e.get("value") for e in container.get("env", [])}


def _most_pods(docs: list[Doc], name: str) -> int:
    """maxReplicas, plus the pods a rolling update adds on top at that size."""
    most = int(one(docs, "HorizontalPodAutoscaler", name)["spec"]["maxReplicas"])
    strategy = one(docs, "Deployment", name)["spec"].get("strategy", {})
    surge = str(strategy.get("rollingUpdate", {}).get("maxSurge", "25%"))
    extra = math.ceil(most * int(surge[:-1]) / 100) if surge.endswith("%") else int(surge)
    return most + extra


def budget(docs: list[Doc], pooler: Doc) -> Budget:
    params = pooler["spec"]["pgbouncer"]["parameters"]
    per_instance = int(params["default_pool_size"]) + int(params.get("reserve_pool_size", 0))
    pooled, direct, clients = {}, {}, 0
    for name in SERVICES:
        env, pods = _env(docs, name), _most_pods(docs, name)
        pool_max = int(env.get(f"{name.upper()}_DB_POOL_MAX")
                       or ServiceSettings.model_fields["db_pool_max"].default)
        pooled[name] = int(pooler["spec"]["instances"]) * per_instance
        direct[name] = pods * SESSIONS_PER_PROCESS
        clients += pods * pool_max
    return Budget(pooled, direct, clients)


def _fits(total: int, cluster: Doc) -> bool:
    parameters = cluster["spec"]["postgresql"]["parameters"]
    reserved = int(parameters.get("superuser_reserved_connections", 3))
    return total + reserved + HEADROOM <= int(parameters["max_connections"])


def test_services_send_requests_through_the_pooler_and_sessions_direct(
    prod: list[Doc],
) -> None:
    cluster, pooler = _load("cluster.yaml"), _load("pooler.yaml")
    assert pooler["kind"] == "Pooler" and pooler["spec"]["cluster"]["name"] == "marketplace-pg"
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    namespace = cluster["metadata"]["namespace"]
    assert pooler["metadata"]["namespace"] == namespace
    pooler_host = f"{pooler['metadata']['name']}.{namespace}.svc.cluster.local"
    primary_host = f"{cluster['metadata']['name']}-rw.{namespace}.svc.cluster.local"
    for name in SERVICES:
        env, x = _env(prod, name), name.upper()
        assert env["DATABASE_POOLER_HOST"] == pooler_host
        assert env["DATABASE_HOST"] == primary_host
        assert "@$(DATABASE_POOLER_HOST):" in env[f"{x}_DATABASE_URL"], name
        assert "@$(DATABASE_HOST):" in env[f"{x}_DATABASE_SESSION_URL"], name
        assert env[f"{x}_DB_POOLER"] == "true", name


def test_connections_fit_max_connections_at_the_hpa_maxima(prod: list[Doc]) -> None:
    cluster, pooler = _load("cluster.yaml"), _load("pooler.yaml")
    found = budget(prod, pooler)
    limit = cluster["spec"]["postgresql"]["parameters"]["max_connections"]
    assert _fits(found.total, cluster), (
        f"{found.total} connections at the maxima (pooled {found.pooled}, direct "
        f"{found.direct}) + reserved + {HEADROOM} headroom > max_connections {limit}"
    )
    # Every pod's request pool full still fits the pooler with one instance lost.
    instances = int(pooler["spec"]["instances"])
    max_client_conn = int(pooler["spec"]["pgbouncer"]["parameters"]["max_client_conn"])
    assert found.clients <= (instances - 1) * max_client_conn, found.clients


def test_the_budget_check_can_fail(prod: list[Doc]) -> None:
    """Without the pooler (each pod's request pool straight to Postgres) it would not fit,
    nor with a pooler sized per pod."""
    cluster, pooler = _load("cluster.yaml"), _load("pooler.yaml")
    assert not _fits(budget(prod, pooler).clients, cluster)
    oversized = yaml.safe_load(yaml.safe_dump(pooler))
    oversized["spec"]["pgbouncer"]["parameters"]["default_pool_size"] = "40"
    assert not _fits(budget(prod, oversized).total, cluster)


def test_backups_and_monitoring_are_on() -> None:
    cluster, scheduled = _load("cluster.yaml"), _load("scheduled-backup.yaml")
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://") and store["wal"]["compression"]
    assert cluster["spec"]["backup"]["retentionPolicy"]
    assert cluster["spec"]["monitoring"]["enablePodMonitor"] is True
    assert scheduled["kind"] == "ScheduledBackup"
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert scheduled["spec"]["method"] == "barmanObjectStore"
    assert len(scheduled["spec"]["schedule"].split()) == 6  # CNPG's cron has seconds
