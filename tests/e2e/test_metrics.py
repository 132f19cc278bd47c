"""Each service's /metrics as a Prometheus server reads it: `promtool check metrics` passes,
and after a checkout the series the dashboard and the alerts read are there, with the types
and labels they expect; the same for the audit exporter's metrics."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import grpc
import httpx
import pytest
from marketplace.payments.v1 import payments_pb2, payments_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.cli import audit, audit_metrics
from services.common import grpcutil
from tests import factories
from tests.e2e.conftest import SERVICES, SINGLE_ONLY, Stack

pytestmark = SINGLE_ONLY

PAYMENTS = "marketplace.payments.v1.PaymentService"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: `make system-packages` (Debian's prometheus package)"
    return found


async def scrape(http: httpx.AsyncClient, stack: Stack, service: str) -> str:
    answer = await http.get(f"{stack.url(service)}/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


def samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples carrying `labels` (0 when there is none)."""
    return sum(s.value for s in samples(text)
               if s.name == name and labels.items() <= s.labels.items())


async def test_every_service_passes_promtool_and_exports_what_dashboards_read(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"))
    placed = await http.post(f"{stack.url('orders')}/v1/orders",
                             json=factories.order_body(sku["id"]),
                             headers=buyer.auth | factories.idem())
    assert placed.status_code == 201, placed.text
    texts = {name: await scrape(http, stack, name) for name in SERVICES}

    for name, text in texts.items():
        lint = await asyncio.to_thread(
            subprocess.run, [promtool(), "check", "metrics"], input=text, text=True,
            capture_output=True, timeout=60, check=False)
        assert lint.returncode == 0, f"{name}: {lint.stdout}{lint.stderr}"
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        foreign = [f for f in families if not f.startswith(("marketplace_", "process_", "python_"))]
        assert not foreign, f"{name} exports metrics without the prefix: {foreign}"
        for counter in ("marketplace_outbox_published", "marketplace_consumer_applied",
                        "marketplace_consumer_dead_lettered",
                        "marketplace_consumer_batch_fallbacks"):
            assert families[counter] == "counter", (name, counter)
        # The pool: its size, what is in use, and how long acquiring took.
        assert value(text, "marketplace_db_pool_max_connections", pool=name) >= 1
        assert value(text, "marketplace_db_pool_connections", pool=name) >= 1
        assert value(text, "marketplace_db_pool_acquire_duration_seconds_count", pool=name) >= 1
        assert f'marketplace_db_pool_waiting_acquires{{pool="{name}"}}' in text
        assert value(text, "process_cpu_seconds_total") > 0

    orders, payments = texts["orders"], texts["payments"]
    paid = {"grpc_service": PAYMENTS, "grpc_method": "AuthorizeBatch"}
    assert value(orders, "marketplace_grpc_client_handled_total", **paid, grpc_code="OK") >= 1
    assert value(orders, "marketplace_grpc_client_handling_seconds_count", **paid) >= 1
    assert value(payments, "marketplace_grpc_server_handled_total", **paid, grpc_code="OK") >= 1
    assert value(payments, "marketplace_grpc_server_handling_seconds_count", **paid) >= 1
    assert value(orders, "marketplace_orders_settled_total", status="confirmed") >= 1
    total = placed.json()["total"]["amount"]
    assert value(orders, "marketplace_orders_gmv_minor_units_total", currency="CNY") >= total
    assert value(orders, "marketplace_http_requests_total", method="POST", route="/v1/orders",
                 status="201") >= 1


async def test_a_refused_rpc_is_counted_by_its_status_code(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    target = f"127.0.0.1:{stack.topology.layout.front.grpc['payments']}"
    refused = {"grpc_service": PAYMENTS, "grpc_method": "GetPayment",
               "grpc_code": "UNAUTHENTICATED"}
    before = value(await scrape(http, stack, "payments"),
                   "marketplace_grpc_server_handled_total", **refused)
    async with grpcutil.channel(target, service="orders", secret="not-the-secret") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await payments_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payments_pb2.GetPaymentRequest(order_id="0" * 32))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = value(await scrape(http, stack, "payments"),
                  "marketplace_grpc_server_handled_total", **refused)
    assert after == before + 1


async def test_the_audit_exporter_reports_each_audit_and_each_failed_run(stack: Stack) -> None:
    registry = audit_metrics.REGISTRY
    clean = value(generate_latest(registry).decode(), "marketplace_audit_runs_total",
                  result="clean")
    assert await audit_metrics.run_once(stack.db.auditor_dsn, settle_s=20)
    text = generate_latest(registry).decode()
    lint = await asyncio.to_thread(
        subprocess.run, [promtool(), "check", "metrics"], input=text, text=True,
        capture_output=True, timeout=60, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert value(text, "marketplace_audit_runs_total", result="clean") == clean + 1
    assert value(text, "marketplace_audit_failed_checks") == 0
    checks = [s for s in samples(text) if s.name == "marketplace_audit_violations"]
    assert len(checks) == len(audit.CHECKS) and all(s.value == 0 for s in checks)
    last_run = value(text, "marketplace_audit_last_run_timestamp_seconds")
    assert last_run > 0

    # A run that cannot reach Postgres is counted as an error and leaves the last run as it was.
    assert not await audit_metrics.run_once("postgresql://auditor@127.0.0.1:9/none", settle_s=0)
    text = generate_latest(registry).decode()
    assert value(text, "marketplace_audit_runs_total", result="error") >= 1
    assert value(text, "marketplace_audit_last_run_timestamp_seconds") == last_run
