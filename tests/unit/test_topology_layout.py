"""Where `marketplace up --replicas N` puts each process, and what each one is told."""

from __future__ import annotations

from pathlib import Path

from services.cli.launcher import Ports, service_env
from services.cli.secrets import LocalSecrets
from services.cli.topology import Layout, Shape, Topology

SERVICES = ("orders", "payments", "membership", "analytics")
DSNS = {n: f"postgresql://{n}:pw@127.0.0.1:5432/marketplace" for n in SERVICES}


def _planned(shape: Shape, front: Ports | None = None) -> dict[str, dict[str, str]]:
    layout = Layout.local(front or Ports.local(), shape.replicas)
    secrets = LocalSecrets(passwords={}, admin_api_key="x" * 32, internal_auth_secret="y" * 32)

    def env_of(name: str, ports: Ports) -> dict[str, str]:
        return service_env(name, dsns=DSNS, nats_url="nats://127.0.0.1:1", ports=ports,
                           secrets=secrets, key_file=Path("key.pem"), base_env={})

    topo = Topology(shape, layout, Path("unused"))
    return {inst.label: env for inst, env in topo.planned(env_of, DSNS)}


def _all_ports(layout: Layout) -> list[int]:
    return [port for _, port in layout.ports_to_check()]


def test_plain_up_runs_one_process_each_exactly_as_before() -> None:
    planned = _planned(Shape())
    assert sorted(planned) == sorted(SERVICES)
    secrets = LocalSecrets(passwords={}, admin_api_key="x" * 32, internal_auth_secret="y" * 32)
    for name in SERVICES:
        assert planned[name] == service_env(
            name, dsns=DSNS, nats_url="nats://127.0.0.1:1", ports=Ports.local(),
            secrets=secrets, key_file=Path("key.pem"), base_env={})


def test_replicas_get_ports_of_their_own_after_the_balancers_and_clear_of_a_second_stack() -> None:
    layout = Layout.local(Ports.local(), 2)
    ports = _all_ports(layout)
    assert len(ports) == len(set(ports)), "no two processes share a port"
    assert [b.port for b in layout.backends()] == [8000, 8001, 8002, 8003]
    assert layout.backends()[0].replicas == [8004, 8008]
    assert layout.grpc_ports("payments") == [50054, 50056]
    second = Layout.local(Ports.local(8100), 2)
    assert set(ports).isdisjoint(_all_ports(second))
    assert max(Layout.local(Ports.local(), 9).front.http.values()) < 8100


def test_each_replica_is_named_drains_and_orders_calls_every_replica() -> None:
    planned = _planned(Shape(replicas=2))
    assert sorted(planned) == sorted(f"{n}-{r}" for n in SERVICES for r in (1, 2))
    orders = planned["orders-2"]
    assert orders["ORDERS_INSTANCE_ID"] == "orders-2"
    assert orders["ORDERS_HTTP_PORT"] == "8008" and orders["ORDERS_DRAIN_S"] == "2"
    assert orders["ORDERS_PAYMENTS_TARGET"] == "ipv4:127.0.0.1:50054,127.0.0.1:50056"
    assert orders["ORDERS_MEMBERSHIP_TARGET"] == "ipv4:127.0.0.1:50055,127.0.0.1:50057"
    # Tokens are checked against membership's keys through the balancer.
    assert orders["ORDERS_JWKS_URL"] == "http://127.0.0.1:8002/.well-known/jwks.json"
    assert planned["payments-1"]["PAYMENTS_GRPC_PORT"] == "50054"
    assert "ORDERS_DB_POOLER" not in orders and "ORDERS_NATS_STREAM_REPLICAS" not in orders


def test_a_nats_cluster_makes_every_service_ask_for_r3_streams() -> None:
    planned = _planned(Shape(nats_cluster=True))
    assert {planned[n][f"{n.upper()}_NATS_STREAM_REPLICAS"] for n in SERVICES} == {"3"}
