"""All four services as real processes on free ports, with their own NATS and database.

The `stack` fixture comes in two shapes, started once per package each: `single` (one
process per service, one NATS server, as plain `marketplace up`) and `topology` (two
replicas of each behind HAProxy, a three-node NATS cluster, PgBouncer: `marketplace up
--replicas 2 --nats-cluster --pooler`), both wired by services/cli/topology.py. Modules
that hold for one shape only say so with `pytestmark = SINGLE_ONLY`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli.launcher import Child, Ports, service_env, spawn, wait_ready
from services.cli.natscluster import NodePorts
from services.cli.secrets import LocalSecrets, ensure_jwt_key
from services.cli.topology import EnvOf, Layout, Shape, Topology
from tests.e2e.otlp import OtlpReceiver
from tests.infra import TEST_PASSWORDS, FreshDb, create_fresh_db, drop_db, embedded_nats, free_port

ADMIN_KEY = "e2e-admin-key-0123456789abcdef"
SERVICES = ("orders", "payments", "membership", "analytics")
SHAPES = {"single": Shape(), "topology": Shape(replicas=2, nats_cluster=True, pooler=True)}
SINGLE_ONLY = pytest.mark.parametrize("stack", ["single"], indirect=True)
EXTRA_ENV = {"ORDERS_PAYMENT_DEADLINE_S": "20", "ORDERS_RECOVERY_INTERVAL_S": "1"}


@dataclass
class Stack:
    db: FreshDb
    topology: Topology
    env: dict[str, dict[str, str]]  # by process label: `orders`, or `orders-1` ...
    otlp: OtlpReceiver
    log_dir: Path
    key_file: Path
    admin_key: str = ADMIN_KEY

    @property
    def ports(self) -> Ports:
        """Where clients connect: the services themselves, or the balancer."""
        return self.topology.layout.front

    @property
    def children(self) -> dict[str, Child]:
        return {child.label: child for child in self.topology.children}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.http[service]}"

    async def start(self, label: str) -> None:
        """(Re)start one process with its (maybe changed) environment; wait until ready."""
        old = self.children[label]
        child = spawn(old.name, self.env[label], self.log_dir, label=label)
        self.topology.children[self.topology.children.index(old)] = child
        await wait_ready(child, child.http_port, asyncio.Event())

    def kill(self, label: str) -> None:
        """kill -9: no graceful shutdown, as in a crash."""
        child = self.children[label]
        child.proc.kill()
        child.proc.wait()


def _layout(shape: Shape) -> Layout:
    def ports() -> Ports:
        return Ports(http={name: free_port() for name in SERVICES},
                     grpc={"payments": free_port(), "membership": free_port()})

    front = ports()
    if not shape.balanced:
        return Layout(front, (front,))
    return Layout(front, tuple(ports() for _ in range(shape.replicas)))


async def _start_infra(
    topo: Topology, request: pytest.FixtureRequest, pg_admin_dsn: str
) -> str:  # fmt: skip
    """NATS (one server, or the cluster with its streams) and PgBouncer: the NATS URL."""
    if topo.shape.pooler:
        await asyncio.to_thread(topo.start_pooler, pg_admin_dsn, TEST_PASSWORDS, port=free_port())
    if not topo.shape.nats_cluster:
        return str(request.getfixturevalue("e2e_nats"))
    nodes = [NodePorts(free_port(), free_port(), free_port()) for _ in range(3)]
    return await topo.start_nats_cluster(None, ports=nodes)


def _env_of(
    db: FreshDb, nats_url: str, key_file: Path, base: Mapping[str, str]
) -> EnvOf:
    secrets = LocalSecrets(
        passwords={}, admin_api_key=ADMIN_KEY, internal_auth_secret="e2e-internal-secret-0123456789"
    )

    def env_of(name: str, ports: Ports) -> dict[str, str]:
        return service_env(
            name, dsns=db.dsns, nats_url=nats_url, ports=ports, secrets=secrets,
            key_file=key_file, base_env=base,
        ) | EXTRA_ENV  # fmt: skip

    return env_of


@pytest.fixture(scope="package")
def e2e_nats() -> Iterator[str]:
    with embedded_nats() as url:
        yield url


@pytest.fixture(scope="package", params=[
    "single", pytest.param("topology", marks=pytest.mark.topology)])  # fmt: skip
async def stack(
    request: pytest.FixtureRequest, pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(request, request.param, pg_admin_dsn, tmp_path_factory) as s:
        yield s


@asynccontextmanager
async def running_stack(
    request: pytest.FixtureRequest, shape_name: str, pg_admin_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:  # fmt: skip
    """A seeded stack of the shape `single` or `topology`, stopped and dropped on exit (also
    for tests elsewhere that need the topology, e.g. tests/topology's fault test)."""
    shape = SHAPES[shape_name]
    root = tmp_path_factory.mktemp(f"e2e-{shape_name}")
    db = await create_fresh_db(pg_admin_dsn, "e2e")
    key_file = ensure_jwt_key(root / "jwt-ed25519.pem")
    topo = Topology(shape, _layout(shape), root)
    # The receiver outlives the processes: they flush their last spans to it as they stop.
    with OtlpReceiver(free_port()) as otlp:
        try:
            nats_url = await _start_infra(topo, request, pg_admin_dsn)
            base = dict(os.environ) | {
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
            planned = topo.planned(_env_of(db, nats_url, key_file, base), db.dsns)
            s = Stack(db, topo, {inst.label: env for inst, env in planned}, otlp,
                      root / "logs", key_file)  # fmt: skip
            await topo.start_services(planned, s.log_dir, asyncio.Event())
            await _seed(s)
            yield s
        finally:
            await asyncio.to_thread(topo.stop)
            await drop_db(pg_admin_dsn, db.name)


async def _seed(s: Stack) -> None:
    from seeds.seed import seed_if_empty

    seeded = await seed_if_empty(dict(s.db.dsns), membership_url=None, progress=False)
    assert seeded, "a fresh database must be seeded"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client
