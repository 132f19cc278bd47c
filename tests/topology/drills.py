"""Failure drills on the running topology (tests/e2e/conftest.py's `topology` stack): kill -9
of a service replica, of the NATS stream leader, of PgBouncer; and a watch on the outbox
relay leadership of every schema, read from each replica's /readyz."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import nats
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from services.cli.balancer import replica_states
from services.cli.natscluster import NatsCluster, cluster_ready
from services.cli.natsserver import spawn_nats
from services.common.events import STREAMS
from tests.e2e.conftest import Stack
from tests.helpers import eventually
from tests.infra import TEST_PASSWORDS

SERVICES = ("orders", "payments", "membership", "analytics")
WATCH_EVERY_S = 0.25


@dataclass
class Drill:
    """What one fault did and how long the system took to get over it, as observed."""

    what: str
    at: float  # monotonic
    wall: datetime
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        timings = " ".join(f"{k}={v:.1f}s" for k, v in self.timings.items())
        notes = " ".join(f"{k}={len(v) if isinstance(v, list) else v}"
                         for k, v in self.notes.items())  # fmt: skip
        return f"{self.what}: {timings} {notes}".strip()


def _since(t0: float) -> float:
    return time.monotonic() - t0


@dataclass
class LeaderWatch:
    """Samples every replica's /readyz `outbox.leader`: who leads each schema's relay, and
    whether two replicas ever claimed one schema at once (read twice to be sure: a claim
    read just before its holder lost the lock, beside its successor's, is no overlap)."""

    stack: Stack
    leaders: dict[str, str | None] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    samples: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while not stop.is_set():
                claims = await self._claims(http)
                doubled = {s for s, labels in claims.items() if len(labels) > 1}
                if doubled:
                    again = await self._claims(http)
                    for schema in doubled:
                        both = claims[schema] & again[schema]
                        if len(both) > 1:
                            self.overlaps.append(f"{schema}: {sorted(both)}")
                for schema in SERVICES:
                    labels = claims[schema]
                    self.leaders[schema] = next(iter(labels)) if len(labels) == 1 else None
                self.samples += 1
                await asyncio.sleep(WATCH_EVERY_S)

    async def _claims(self, http: httpx.AsyncClient) -> dict[str, set[str]]:
        async def leads(port: int) -> bool:
            try:
                answer = await http.get(f"http://127.0.0.1:{port}/readyz")
                return bool(answer.json()["outbox"]["leader"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return False  # dead or starting: it holds no lock

        children = list(self.stack.topology.children)
        answers = await asyncio.gather(*(leads(c.http_port) for c in children))
        claims: dict[str, set[str]] = {name: set() for name in SERVICES}
        for child, leader in zip(children, answers, strict=True):
            if leader:
                claims[child.name].add(child.label)
        return claims

    async def leader(self, schema: str) -> str | None:
        """The replica that leads `schema`'s relay at the last sample (None: none, or two)."""
        return self.leaders.get(schema)

    async def leader_other_than(self, schema: str, label: str) -> str | None:
        return await eventually(
            lambda: self.leader(schema), until=lambda who: who not in (None, label),
            timeout_s=60, what=f"{schema}'s relay led by another replica than {label}",
        )  # fmt: skip


async def kill_replica(stack: Stack, watch: LeaderWatch, service: str) -> Drill:
    """kill -9 the replica leading `service`'s relay; the supervisor starts it again."""
    label = await eventually(lambda: watch.leader(service), what=f"{service}'s relay leader")
    assert label is not None
    child = stack.children[label]
    old_pid = child.proc.pid
    drill = Drill(f"kill -9 {label} (relay leader of {service})", time.monotonic(),
                  datetime.now(UTC))  # fmt: skip
    stack.kill(label)
    if service == "orders":  # its in-flight orders: left to another replica's recovery
        rows = await stack.db.sql("SELECT id::text AS id FROM orders.orders "
                                  "WHERE status = 'PENDING'")  # fmt: skip
        drill.notes["pending_at_kill"] = [r["id"] for r in rows]
    successor = await watch.leader_other_than(service, label)
    drill.timings["relay_leader_moved"] = _since(drill.at)
    drill.notes["new_relay_leader"] = successor

    async def back_in_rotation() -> bool:
        if child.proc.pid == old_pid or child.proc.poll() is not None:
            return False
        states = await asyncio.to_thread(replica_states, stack.topology.root / "haproxy")
        return states.get(f"{service}/{label}") == "UP"

    await eventually(back_in_rotation, timeout_s=120, what=f"{label} restarted and UP")
    drill.timings["replica_back_up"] = _since(drill.at)
    return drill


async def _info(js: JetStreamContext, stream: str) -> StreamInfo | None:
    try:
        return await js.stream_info(stream)
    except Exception:  # no leader right now, or the client is reconnecting
        return None


async def _leaders(js: JetStreamContext) -> dict[str, str | None]:
    infos = {s: await _info(js, s) for s in STREAMS}
    return {s: i.cluster.leader if i and i.cluster else None for s, i in infos.items()}


def _all_current(infos: list[StreamInfo | None]) -> bool:
    return all(
        i is not None and i.cluster is not None and i.cluster.leader is not None
        and len(i.cluster.replicas or []) == 2
        and all(p.current and not p.offline for p in i.cluster.replicas or [])
        for i in infos
    )  # fmt: skip


async def kill_stream_leader(cluster: NatsCluster, pause_s: float) -> Drill:
    """kill -9 the node leading ORDERS; `pause_s` later start it again and wait until it
    is a current replica of every stream again."""
    nc = await nats.connect(cluster.url.split(","), max_reconnect_attempts=-1)
    try:
        js = nc.jetstream(timeout=2)
        before = await eventually(lambda: _leaders(js), until=lambda ls: all(ls.values()),
                                  what="a leader for every stream")  # fmt: skip
        victim = before["ORDERS"]
        assert victim is not None
        node = cluster.node(victim)
        drill = Drill(f"kill -9 NATS {victim} (pid {node.pid}, leader of "
                      f"{sorted(s for s, n in before.items() if n == victim)})",
                      time.monotonic(), datetime.now(UTC))  # fmt: skip
        cluster.kill9(victim)
        after = await eventually(
            lambda: _leaders(js), timeout_s=60, what="new leaders for the streams",
            until=lambda ls: all(n not in (None, victim) for n in ls.values()),
        )  # fmt: skip
        drill.timings["streams_led_again"] = _since(drill.at)
        drill.notes["new_leaders"] = after
        await asyncio.sleep(pause_s)
        restarted = time.monotonic()
        node.pid = spawn_nats(node.conf, node.log)
        await eventually(lambda: asyncio.to_thread(cluster_ready, cluster.nodes),
                         timeout_s=60, what=f"{victim} back in the meta group")  # fmt: skip
        await eventually(lambda: asyncio.gather(*(_info(js, s) for s in STREAMS)),
                         until=_all_current, timeout_s=90,
                         what=f"{victim} a current replica of every stream")  # fmt: skip
        drill.timings["node_current_again_after_restart"] = _since(restarted)
        return drill
    finally:
        await nc.close()


async def restart_pooler(stack: Stack, down_s: float) -> Drill:
    """kill -9 PgBouncer; `down_s` later start it again on its port, from its directory."""
    topo = stack.topology
    old = topo.pooler
    assert old is not None
    drill = Drill(f"kill -9 PgBouncer (pid {old.pid}, port {old.port})", time.monotonic(),
                  datetime.now(UTC))  # fmt: skip
    old.proc.kill()
    old.proc.wait()
    await asyncio.sleep(down_s)
    await asyncio.to_thread(topo.start_pooler, stack.db.admin_dsn, TEST_PASSWORDS,
                            port=old.port)  # fmt: skip
    drill.timings["pooler_listening_again"] = _since(drill.at)
    return drill
