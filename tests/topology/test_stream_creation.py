"""Many replicas starting at once on a fresh NATS cluster all get their streams.

On a fresh three-node cluster, concurrent creations of the same R3 stream make the
losers wait out their request (a timeout, not an error saying it exists): each replica
must then find the stream the winner created, as a Deployment's pods starting together do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from services.cli.natsauth import USERS
from services.cli.natscluster import NatsCluster
from services.cli.natsserver import NATS_ADMIN_USER, with_credentials
from services.common.bus import Bus
from services.common.events import STREAMS
from tests.faults.nats_cluster import remove_cluster, start_cluster

PASSWORDS = {user: f"streams-{user}-password" for user in USERS}
REPLICAS = 8  # e.g. two replicas of each of the four services


@pytest.fixture
def fresh_cluster(request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    request.getfixturevalue("_embedded_servers_guard")
    cluster = start_cluster(users=PASSWORDS)
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


async def test_replicas_starting_together_on_a_fresh_cluster_all_get_r3_streams(
    fresh_cluster: NatsCluster,
) -> None:
    url = with_credentials(fresh_cluster.url, NATS_ADMIN_USER, PASSWORDS[NATS_ADMIN_USER])
    buses = [await Bus.connect(url, name=f"replica-{i}", replicas=3) for i in range(REPLICAS)]
    try:
        results = await asyncio.gather(*(b.ensure_streams() for b in buses),
                                       return_exceptions=True)
        assert [r for r in results if r is not None] == []
        for stream in STREAMS:
            info = await buses[0].js.stream_info(stream)
            assert info.config.num_replicas == 3
            assert len([info.cluster.leader, *(info.cluster.replicas or [])]) == 3
    finally:
        for bus in buses:
            await bus.close()
