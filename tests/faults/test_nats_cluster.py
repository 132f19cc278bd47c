"""kill -9 of the ORDERS stream leader of a three-node JetStream cluster (R3 streams) in the
middle of a burst of acknowledged publishes: no acknowledged event is lost, none is stored
twice (a retried publish keeps its Nats-Msg-Id, as the outbox relay's does)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1.events_pb2 import OrderCancelled
from nats.js.api import StreamInfo

from services.common.bus import Bus
from services.common.events import envelope_headers
from tests.faults.nats_cluster import NatsCluster, remove_cluster, start_cluster
from tests.helpers import eventually

SUBJECT = "orders.order.cancelled"
PUBLISHERS = 4
PER_PUBLISHER = 250
KILL_AFTER_ACKS = 300  # of the 1000: the leader dies with the burst well under way
RETRY_DEADLINE_S = 25.0  # per message, like an outbox row that waits for the next relay pass

log = logging.getLogger(__name__)
# The production cluster module (services/cli/natscluster.py): also the topology family's.
pytestmark = pytest.mark.topology


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        remove_cluster(c)


def _body(order_id: uuid.UUID) -> bytes:
    now = Timestamp()
    now.GetCurrentTime()
    return OrderCancelled(
        order_id=str(order_id), member_id=str(uuid.uuid4()), reason="fault-test", cancelled_at=now
    ).SerializeToString()


async def _publish_until_acked(bus: Bus, event_id: uuid.UUID, retries: Counter[str]) -> None:
    """Publish one event, retrying the SAME message (same Nats-Msg-Id) until acked."""
    headers = envelope_headers(SUBJECT, event_id, "orders")
    body = _body(uuid.uuid4())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RETRY_DEADLINE_S
    while True:
        try:
            await bus.publish(SUBJECT, body, headers)
            return
        except Exception as exc:  # timeouts, no responders, 503s while the leader moves
            retries[type(exc).__name__] += 1
            if loop.time() > deadline:
                raise AssertionError(f"{event_id} not acked within {RETRY_DEADLINE_S}s") from exc
            await asyncio.sleep(0.1)


async def _stream_info(bus: Bus) -> StreamInfo | None:
    try:
        return await bus.js.stream_info("ORDERS")
    except Exception:  # the stream has no leader right now
        return None


@pytest.mark.timeout(90)
async def test_kill9_stream_leader_mid_burst_loses_no_acked_event(cluster: NatsCluster) -> None:
    bus = await Bus.connect(cluster.url, name="fault-nats-cluster", replicas=3)
    try:
        await bus.ensure_streams()
        info = await eventually(
            lambda: _stream_info(bus),
            until=lambda i: bool(i and i.cluster and i.cluster.leader),
            what="ORDERS stream leader",
        )
        assert info is not None and info.config.num_replicas == 3
        assert info.cluster is not None
        leader = info.cluster.leader
        assert leader is not None

        acked: list[uuid.UUID] = []
        retries: Counter[str] = Counter()
        under_way = asyncio.Event()

        async def publisher() -> None:
            for _ in range(PER_PUBLISHER):
                event_id = uuid.uuid4()
                await _publish_until_acked(bus, event_id, retries)
                acked.append(event_id)
                if len(acked) >= KILL_AFTER_ACKS:
                    under_way.set()

        burst = asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        try:
            await asyncio.wait_for(under_way.wait(), timeout=15.0)
            loop = asyncio.get_running_loop()
            acked_before_kill = len(acked)
            killed_at = loop.time()
            cluster.kill9(leader)

            new_info = await eventually(
                lambda: _stream_info(bus),
                until=lambda i: bool(
                    i and i.cluster and i.cluster.leader and i.cluster.leader != leader
                ),
                timeout_s=20.0,
                what="a new ORDERS stream leader",
            )
            failover_s = loop.time() - killed_at
        finally:
            await burst

        assert new_info is not None and new_info.cluster is not None
        stored = await _read_stream_ids(bus)
        duplicates = [i for i, n in Counter(stored).items() if n > 1]
        missing = {str(i) for i in acked} - set(stored)
        state = (await bus.js.stream_info("ORDERS")).state
        log.warning(
            "nats cluster failover: acked=%d (before kill %d) stored=%d failover=%.2fs "
            "old_leader=%s new_leader=%s retries=%s",
            len(acked), acked_before_kill, len(stored), failover_s,
            leader, new_info.cluster.leader, dict(retries),
        )
        print(
            f"\nacked={len(acked)} acked_before_kill={acked_before_kill} stored={len(stored)} "
            f"stream_messages={state.messages} failover={failover_s:.2f}s "
            f"leader {leader}->{new_info.cluster.leader} retries={dict(retries)}"
        )

        assert acked_before_kill < PUBLISHERS * PER_PUBLISHER, "the burst ended before the kill"
        assert len(acked) == PUBLISHERS * PER_PUBLISHER == len(set(acked))
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        assert not duplicates, f"{len(duplicates)} events stored twice, e.g. {duplicates[:3]}"
        # Every publish was retried until acked, so nothing unacked was left behind: the
        # stream holds exactly the acknowledged events (it started empty).
        assert state.messages == len(stored) == len(set(acked))
    finally:
        await bus.close()


async def _read_stream_ids(bus: Bus) -> list[str]:
    """The Nats-Msg-Id of every message in ORDERS, read by sequence from the leader."""
    state = (await bus.js.stream_info("ORDERS")).state
    ids = []
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await bus.js.get_msg("ORDERS", seq)
        assert msg.subject == SUBJECT
        assert msg.headers is not None
        ids.append(msg.headers["Nats-Msg-Id"])
    return ids
