"""What `marketplace up` hands each service from the caller's environment."""

from __future__ import annotations

from pathlib import Path

from services.cli.launcher import Ports, service_env
from services.cli.secrets import LocalSecrets

SERVICES = ("orders", "payments", "membership", "analytics")


def _env(name: str, base: dict[str, str]) -> dict[str, str]:
    secrets = LocalSecrets(passwords={}, admin_api_key="x" * 32, internal_auth_secret="y" * 32)
    return service_env(
        name, dsns={n: f"postgresql://{n}" for n in SERVICES}, nats_url="nats://127.0.0.1:1",
        ports=Ports.local(), secrets=secrets, key_file=Path("key.pem"), base_env=base)


def test_a_service_gets_its_own_settings_but_not_another_services_or_unrelated_ones() -> None:
    base = {"ORDERS_MAX_CHECKOUTS_IN_FLIGHT": "10", "PAYMENTS_PROCESSOR_LATENCY_MS": "5",
            "DATABASE_URL": "postgresql://elsewhere", "SECRET_TOKEN": "t", "PATH": "/bin"}
    orders = _env("orders", base)
    assert orders["ORDERS_MAX_CHECKOUTS_IN_FLIGHT"] == "10"
    assert "PAYMENTS_PROCESSOR_LATENCY_MS" not in orders
    assert {"DATABASE_URL", "SECRET_TOKEN"}.isdisjoint(orders)
    assert orders["PATH"] == "/bin"
    assert _env("payments", base)["PAYMENTS_PROCESSOR_LATENCY_MS"] == "5"


def test_where_a_service_listens_and_connects_is_the_launchers_choice() -> None:
    base = {"ORDERS_HTTP_PORT": "1", "ORDERS_DATABASE_URL": "postgresql://other",
            "ORDERS_PAYMENTS_TARGET": "10.0.0.1:1"}
    orders = _env("orders", base)
    assert orders["ORDERS_HTTP_PORT"] == "8000"
    assert orders["ORDERS_DATABASE_URL"] == "postgresql://orders"
    assert orders["ORDERS_PAYMENTS_TARGET"] == "127.0.0.1:50052"


def test_a_second_stack_on_another_port_base_moves_its_grpc_ports_too() -> None:
    first, second = Ports.local(8000), Ports.local(8100)
    assert (first.grpc["payments"], first.grpc["membership"]) == (50052, 50053)
    assert (second.http["orders"], second.grpc["payments"], second.grpc["membership"]) == (
        8100, 50152, 50153)
    assert set(first.http.values()).isdisjoint(second.http.values())
