"""The production topology on loopback: replicas behind HAProxy, a NATS cluster, PgBouncer.

`marketplace up --replicas N --nats-cluster --pooler` and the e2e stack both start it from
here, so the wiring (ports, each replica's environment, start and stop order) exists once.

Port layout with N > 1 replicas: the balancer takes the usual ports (`--port-base` + 0..3)
and the replicas the ports right after them, service by service as usual: replica r (1..N)
listens on `port_base + 4·r + offset` for HTTP (8004-8007 for the first, 8008-8011 for the
second) and on `grpc_port_base + 2·r + i` for gRPC (50054/50055, 50056/50057). A stack thus
holds one block, `port_base` .. `port_base + 4·(N+1) - 1` (8000-8011 for two replicas),
clear of a second stack's `--port-base 8100`. With N = 1 the services listen on the usual
ports themselves, as plain `marketplace up` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.cli.balancer import Backend, Balancer, replica_states, start_balancer
from services.cli.dbsetup import SERVICES
from services.cli.launcher import (
    GRPC_SERVICES,
    START_GROUPS,
    Child,
    Interrupted,
    Ports,
    spawn,
    stop_children,
    wait_ready,
)
from services.cli.natscluster import NatsCluster, NodePorts, start_nats_cluster
from services.cli.natsserver import NATS_ADMIN_USER, with_credentials
from services.cli.pooler import Pooler, service_db_env, start_pgbouncer, stop_pgbouncer
from services.cli.procs import StackError, cmdline_of, find_port, port_free, stop_process
from services.common.bus import Bus

MAX_REPLICAS = 9
# Long enough for HAProxy (checks every second, two misses) to take a stopping replica out.
DRAIN_S = "2"
STREAM_REPLICAS = "3"
PGBOUNCER_DEFAULT_PORT = 42260


@dataclass(frozen=True)
class Shape:
    """What runs besides one process per service, Postgres and one NATS server."""

    replicas: int = 1
    nats_cluster: bool = False
    pooler: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise StackError(f"--replicas takes 1 to {MAX_REPLICAS}, not {self.replicas}")

    @property
    def balanced(self) -> bool:
        return self.replicas > 1


@dataclass(frozen=True)
class Instance:
    """One process of a service: its label (stack.json, log file, instance id) and ports."""

    name: str
    label: str
    ports: Ports  # the front's, with this process's own HTTP and gRPC port in place


@dataclass(frozen=True)
class Layout:
    """Where clients connect (`front`) and where each replica listens (`replicas`)."""

    front: Ports
    replicas: tuple[Ports, ...]

    @classmethod
    def local(cls, front: Ports, replicas: int) -> Layout:
        """The documented layout: replica r on the block of ports r blocks after the front's."""
        if replicas == 1:
            return cls(front, (front,))
        http_block, grpc_block = len(front.http), len(front.grpc)
        return cls(front, tuple(
            Ports(http={n: p + http_block * r for n, p in front.http.items()},
                  grpc={n: p + grpc_block * r for n, p in front.grpc.items()})
            for r in range(1, replicas + 1)
        ))  # fmt: skip

    @property
    def balanced(self) -> bool:
        return len(self.replicas) > 1

    def instances(self, name: str) -> list[Instance]:
        if not self.balanced:
            return [Instance(name, name, self.front)]
        return [Instance(name, f"{name}-{r}", self._own(name, own))
                for r, own in enumerate(self.replicas, start=1)]  # fmt: skip

    def _own(self, name: str, replica: Ports) -> Ports:
        """The front's ports with `name`'s own in place (its peers are reached via the front)."""
        grpc = {name: replica.grpc[name]} if name in replica.grpc else {}
        return Ports(http={**self.front.http, name: replica.http[name]},
                     grpc={**self.front.grpc, **grpc})  # fmt: skip

    def grpc_ports(self, name: str) -> list[int]:
        return [own.grpc[name] for own in self.replicas]

    def backends(self) -> list[Backend]:
        return [Backend(n, self.front.http[n], [own.http[n] for own in self.replicas])
                for n in SERVICES]  # fmt: skip

    def ports_to_check(self) -> Iterator[tuple[str, int]]:
        """Every port this layout listens on, named: the balancer's and each process's."""
        if self.balanced:
            yield from ((f"balancer for {n}", p) for n, p in self.front.http.items())
        for inst in (i for name in SERVICES for i in self.instances(name)):
            yield f"{inst.label} (HTTP)", inst.ports.http[inst.name]
            if inst.name in GRPC_SERVICES:
                yield f"{inst.label} (gRPC)", inst.ports.grpc[inst.name]


def grpc_target(ports: Sequence[int]) -> str:
    """One address as before; several as an ipv4: list, balanced per call (grpcutil)."""
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    return addresses if len(ports) == 1 else f"ipv4:{addresses}"


EnvOf = Callable[[str, Ports], dict[str, str]]


@dataclass
class Topology:
    """The parts of the shape one run started, so that it stops them (in `stop`'s order)."""

    shape: Shape
    layout: Layout
    root: Path  # configuration and logs of the cluster, the pooler and the balancer
    cluster: NatsCluster | None = None
    pooler: Pooler | None = None
    balancer: Balancer | None = None
    children: list[Child] = field(default_factory=list)

    async def start_nats_cluster(
        self, users: Mapping[str, str] | None, *, ports: Sequence[NodePorts] | None = None
    ) -> str:
        """Three nodes under <root>/nats-cluster, the streams created R3; their URL.

        The streams are created here, once, before any service starts: on a fresh cluster,
        several processes creating the same R3 stream at once wait for answers that never
        come (nats: timeout), where one server answers the losers 'already in use'."""
        self.cluster = await asyncio.to_thread(
            start_nats_cluster, self.root / "nats-cluster", users=users, ports=ports
        )
        admin = (users or {}).get(NATS_ADMIN_USER)
        url = self.cluster.url
        bus = await Bus.connect(with_credentials(url, NATS_ADMIN_USER, admin) if admin else url,
                                name="marketplace-up", replicas=int(STREAM_REPLICAS))
        try:
            await bus.ensure_streams()
        finally:
            await bus.close()
        return url

    def start_pooler(
        self, admin_dsn: str, users: Mapping[str, str], *, port: int | None = None
    ) -> Pooler:
        """PgBouncer in front of the server `admin_dsn` points at, for `users`' roles."""
        server = urlsplit(admin_dsn)
        port = port or find_port(PGBOUNCER_DEFAULT_PORT, "PgBouncer")
        self.pooler = start_pgbouncer(
            self.root / "pgbouncer", listen_port=port, pg_host=server.hostname or "127.0.0.1",
            pg_port=server.port or 5432, users=users,
        )  # fmt: skip
        return self.pooler

    def planned(
        self, env_of: EnvOf, direct_dsns: Mapping[str, str]
    ) -> list[tuple[Instance, dict[str, str]]]:
        """Every process to start, in start order, with its complete environment."""
        return [(inst, self.instance_env(inst, env_of(inst.name, inst.ports), direct_dsns))
                for group in START_GROUPS for name in group
                for inst in self.layout.instances(name)]  # fmt: skip

    def instance_env(
        self, inst: Instance, env: dict[str, str], direct_dsns: Mapping[str, str]
    ) -> dict[str, str]:
        """`service_env`'s answer, with what the shape changes for this process."""
        x = inst.name.upper()
        if self.layout.balanced:
            env[f"{x}_INSTANCE_ID"] = inst.label
            env.setdefault(f"{x}_DRAIN_S", DRAIN_S)
        if self.shape.nats_cluster:
            env[f"{x}_NATS_STREAM_REPLICAS"] = STREAM_REPLICAS
        if self.pooler is not None:
            direct = direct_dsns[inst.name]
            env |= service_db_env(inst.name, direct_dsn=direct, pooled_dsn=self.pooler.dsn(direct))
        if inst.name == "orders":
            env["ORDERS_PAYMENTS_TARGET"] = grpc_target(self.layout.grpc_ports("payments"))
            env["ORDERS_MEMBERSHIP_TARGET"] = grpc_target(self.layout.grpc_ports("membership"))
        return env

    async def start_services(
        self, planned: Sequence[tuple[Instance, dict[str, str]]], log_dir: Path,
        stop: asyncio.Event, *, on_spawn: Callable[[], None] = lambda: None,
        announce: Callable[[str], AbstractContextManager[None]] | None = None,
    ) -> None:  # fmt: skip
        """Start group by group (gRPC servers first), each process waited for until ready;
        then the balancer in front, once every replica is in its rotation."""
        for group in START_GROUPS:
            batch = [spawn(inst.name, env, log_dir, label=inst.label)
                     for inst, env in planned if inst.name in group]  # fmt: skip
            self.children += batch
            on_spawn()
            for child in batch:
                with announce(f"{child.label} healthy and ready") if announce else _quiet():
                    await wait_ready(child, child.http_port, stop)
        if self.layout.balanced:
            with announce("load balancer (HAProxy)") if announce else _quiet():
                self.balancer = await asyncio.to_thread(
                    start_balancer, self.layout.backends(), self.root / "haproxy")
                await self.wait_balanced(stop)

    async def wait_balanced(self, stop: asyncio.Event, *, within: float = 30.0) -> None:
        """Until HAProxy's health checks have put every replica in its rotation."""
        deadline = time.monotonic() + within
        while True:
            states = await asyncio.to_thread(replica_states, self.root / "haproxy")
            if states and all(state == "UP" for state in states.values()):
                return
            if stop.is_set():
                raise Interrupted
            if time.monotonic() > deadline:
                raise StackError(f"HAProxy has not put every replica up: {dict(states)}")
            await asyncio.sleep(0.25)

    def stop(self) -> list[str]:
        """Services first (each drains while the balancer still routes), then the balancer,
        the pooler and the NATS cluster. Returns what was stopped."""
        stop_children(self.children)
        stopped = [c.label for c in self.children]
        if self.balancer is not None:
            self.balancer.stop()
            stopped.append("haproxy")
        if self.pooler is not None:
            stop_pgbouncer(self.pooler)
            stopped.append("pgbouncer")
        if self.cluster is not None:
            self.cluster.stop()
            stopped.append("nats cluster")
        return stopped

    def state(self, users: Mapping[str, str]) -> dict[str, object]:
        """What stack.json records of this run, for the other commands and `stack stop`."""
        state: dict[str, object] = {"topology": {
            "replicas": self.shape.replicas,
            "balancer": {"pid": self.balancer.proc.pid, "config": str(self.balancer.config_file)}
            if self.balancer else None,
            "pgbouncer": {"pid": self.pooler.pid, "port": self.pooler.port,
                          "config": str(self.pooler.data_dir / "pgbouncer.ini")}
            if self.pooler else None,
        }}  # fmt: skip
        if self.cluster is not None:
            admin = users.get(NATS_ADMIN_USER)
            state |= {
                "nats_url": self.cluster.url,
                "admin_nats_url": with_credentials(self.cluster.url, NATS_ADMIN_USER, admin)
                if admin else self.cluster.url,
                "nats": {"embedded": True, "cluster": True, "url": self.cluster.url,
                         "nodes": [{"name": n.name, "pid": n.pid, "config": str(n.conf),
                                    "monitor_port": n.ports.monitor}
                                   for n in self.cluster.nodes]},
            }  # fmt: skip
        return state


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    yield


def stop_recorded(state: Mapping[str, object]) -> list[str]:
    """For `stack stop`: the balancer and pooler a killed `up` left running (stack.json)."""
    recorded = state.get("topology")
    stopped = []
    for what in ("balancer", "pgbouncer"):
        entry = recorded.get(what) if isinstance(recorded, dict) else None
        if isinstance(entry, dict) and entry["config"] in cmdline_of(entry["pid"]):  # ours
            stop_process(entry["pid"], timeout=10)
            stopped.append(what)
    return stopped


def check_ports_free(layout: Layout) -> None:
    for what, port in layout.ports_to_check():
        if not port_free(port):
            raise StackError(
                f"port {port} for {what} is in use (another `marketplace up`?); stop what "
                "listens there, or pass --port-base / --grpc-port-base to use other ports"
            )
