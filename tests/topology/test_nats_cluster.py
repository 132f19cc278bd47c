"""The production NATS shape on loopback: three nodes (services/cli/natscluster.py) with the
users of services/cli/natsauth.py. Each service publishes only its own subjects, the
streams a service creates with the prod setting stay R3 when one starts with the default,
and compose's generated config takes the same users' passwords from the environment.
An acknowledged publish surviving a kill -9 of the stream leader is
tests/faults/test_nats_cluster.py, on the same cluster module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from services.cli.natsauth import USERS, password_env
from services.cli.natscluster import NatsCluster
from services.cli.natsdeploy import COMPOSE_CONF
from services.cli.natsserver import NATS_ADMIN_USER, nats_healthy, spawn_nats, with_credentials
from services.cli.procs import stop_process
from services.common.bus import Bus
from services.common.events import STREAMS
from services.common.settings import ServiceSettings
from tests.faults.nats_cluster import remove_cluster, start_cluster
from tests.helpers import PERMISSIONS_VIOLATION, eventually, publish_once
from tests.infra import free_port

pytestmark = pytest.mark.topology

PASSWORDS = {user: f"topology-{user}-password" for user in USERS}
PROD_REPLICAS = 3  # <NAME>_NATS_STREAM_REPLICAS in deploy/k8s/overlays/prod


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    request.getfixturevalue("_embedded_servers_guard")
    c = start_cluster(users=PASSWORDS)
    try:
        yield c
    finally:
        remove_cluster(c)


def url_of(servers: str, user: str) -> str:
    return with_credentials(servers, user, PASSWORDS[user])


async def connect(servers: str, user: str, errors: list[str]) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(url_of(servers, user).split(","), error_cb=on_error)


async def ensure_streams(servers: str, user: str, replicas: int) -> None:
    bus = await Bus.connect(url_of(servers, user), name=f"topology-{user}", replicas=replicas)
    try:
        await bus.ensure_streams()
    finally:
        await bus.close()


async def publish(servers: str, user: str, subject: str) -> tuple[str, list[str], bool]:
    """Publish one message as `user`; its Nats-Msg-Id, the errors the server sent, acked?"""
    errors: list[str] = []
    msg_id, acked = await publish_once(await connect(servers, user, errors), subject,
                                       timeout_s=3, errors=errors)
    return msg_id, errors, acked


async def stream_ids(servers: str, stream: str) -> set[str]:
    """Every Nats-Msg-Id in `stream`, read as the admin."""
    nc = await nats.connect(url_of(servers, NATS_ADMIN_USER).split(","))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        ids = set()
        for seq in range(max(1, state.first_seq), state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            ids.add((msg.headers or {}).get("Nats-Msg-Id", ""))
        return ids
    finally:
        await nc.close()


async def replicas_of(servers: str) -> dict[str, tuple[int | None, int]]:
    """Per stream: the configured replicas and how many servers hold it (leader + peers)."""
    nc = await nats.connect(url_of(servers, NATS_ADMIN_USER).split(","))
    try:
        js = nc.jetstream()
        result = {}
        for stream in STREAMS:
            info = await js.stream_info(stream)
            assert info.cluster is not None and info.cluster.leader
            result[stream] = (info.config.num_replicas, 1 + len(info.cluster.replicas or []))
        return result
    finally:
        await nc.close()


async def test_orders_may_not_publish_a_payment_event(cluster: NatsCluster) -> None:
    await ensure_streams(cluster.url, "orders", replicas=3)
    msg_id, errors, acked = await publish(cluster.url, "orders", "payments.payment.captured")
    assert not acked
    assert any(PERMISSIONS_VIOLATION in e.lower() for e in errors), errors
    assert msg_id not in await stream_ids(cluster.url, "PAYMENTS")


@pytest.mark.parametrize(("user", "subject", "stream"), [
    ("orders", "orders.order.placed", "ORDERS"),
    ("payments", "payments.payment.captured", "PAYMENTS"),
    ("membership", "membership.member.registered", "MEMBERSHIP"),
])  # fmt: skip
async def test_a_service_publishes_its_own_subjects(
    cluster: NatsCluster, user: str, subject: str, stream: str
) -> None:
    await ensure_streams(cluster.url, user, replicas=3)
    msg_id, errors, acked = await publish(cluster.url, user, subject)
    assert acked and not errors, errors
    assert msg_id in await stream_ids(cluster.url, stream)


@pytest.mark.parametrize("subject", ["orders.order.placed", "analytics.report.built"])
async def test_analytics_publishes_nothing(cluster: NatsCluster, subject: str) -> None:
    _, errors, acked = await publish(cluster.url, "analytics", subject)
    assert not acked and any(PERMISSIONS_VIOLATION in e.lower() for e in errors), errors


async def test_a_service_may_not_delete_or_purge_a_stream(cluster: NatsCluster) -> None:
    await ensure_streams(cluster.url, "payments", replicas=3)
    msg_id, _, acked = await publish(cluster.url, "payments", "payments.payment.captured")
    assert acked
    errors: list[str] = []

    async def refusals() -> int:
        return sum(PERMISSIONS_VIOLATION in e.lower() for e in errors)

    nc = await connect(cluster.url, "orders", errors)
    try:
        js = nc.jetstream(timeout=3)
        for n, call in enumerate((js.delete_stream, js.purge_stream), start=1):
            # Refused, the request is never answered: no need to wait for its timeout.
            attempt = asyncio.ensure_future(call("PAYMENTS"))
            await eventually(refusals, until=lambda k, n=n, a=attempt: k >= n or a.done(),
                             timeout_s=5, what="the server's refusal")  # fmt: skip
            attempt.cancel()
            [outcome] = await asyncio.gather(attempt, return_exceptions=True)
            assert isinstance(outcome, (asyncio.CancelledError, nats.errors.TimeoutError,
                                        nats.js.errors.Error)), outcome  # fmt: skip
    finally:
        await nc.close()
    assert await refusals() == 2, errors
    assert msg_id in await stream_ids(cluster.url, "PAYMENTS")


async def test_streams_stay_r3_when_a_service_starts_with_the_default(
    cluster: NatsCluster,
) -> None:
    """As in the prod overlay: orders with <NAME>_NATS_STREAM_REPLICAS=3 creates the streams
    (tests/deploy/test_nats_topology.py checks the overlay sets it); then payments starts
    with the setting's default of 1 and must leave them R3."""
    admin = await nats.connect(url_of(cluster.url, NATS_ADMIN_USER).split(","))
    try:
        for stream in STREAMS:  # start from no streams: they are created below
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await admin.jetstream().delete_stream(stream)
    finally:
        await admin.close()
    default = ServiceSettings.model_fields["nats_stream_replicas"].default
    assert default == 1

    await ensure_streams(cluster.url, "orders", replicas=PROD_REPLICAS)
    assert await replicas_of(cluster.url) == {stream: (3, 3) for stream in STREAMS}
    await ensure_streams(cluster.url, "payments", replicas=default)
    assert await replicas_of(cluster.url) == {stream: (3, 3) for stream in STREAMS}


def _compose_conf_on_loopback(root: Path, port: int, monitor_port: int) -> Path:
    """deploy/nats/nats.conf as committed, but listening on loopback ports and storing in
    `root`: everything else (the users, their $NATS_<USER>_PASSWORD references) unchanged."""
    text = COMPOSE_CONF.read_text()
    for old, new in (("0.0.0.0:4222", f"127.0.0.1:{port}"),
                     ("0.0.0.0:8222", f"127.0.0.1:{monitor_port}"),
                     ('"/data"', f'"{root / "js"}"')):  # fmt: skip
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    conf = root / "nats.conf"
    conf.write_text(text)
    return conf


async def _exit_code(pid: int) -> int | None:
    done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222  (WNOHANG: never blocks)
    return os.waitstatus_to_exitcode(status) if done == pid else None


async def test_compose_conf_reads_the_passwords_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, monitor_port = free_port(), free_port()
    conf = _compose_conf_on_loopback(tmp_path, port, monitor_port)
    for user in USERS:
        monkeypatch.setenv(password_env(user), PASSWORDS[user])
    monkeypatch.delenv(password_env("analytics"))
    pid = spawn_nats(conf, tmp_path / "refused.log")  # posix_spawn: os.environ as it is now
    code = await eventually(
        lambda: _exit_code(pid), until=lambda c: c is not None, what="nats-server to give up"
    )
    assert code != 0 and password_env("analytics") in (tmp_path / "refused.log").read_text()

    monkeypatch.setenv(password_env("analytics"), PASSWORDS["analytics"])
    pid = spawn_nats(conf, tmp_path / "nats.log")
    try:
        await eventually(lambda: _healthy(monitor_port), what="the compose NATS config up")
        servers = f"nats://127.0.0.1:{port}"
        await ensure_streams(servers, "orders", replicas=1)
        msg_id, errors, acked = await publish(servers, "orders", "payments.payment.captured")
        assert not acked and any(PERMISSIONS_VIOLATION in e.lower() for e in errors), errors
        assert msg_id not in await stream_ids(servers, "PAYMENTS")
        msg_id, errors, acked = await publish(servers, "payments", "payments.payment.captured")
        assert acked and not errors and msg_id in await stream_ids(servers, "PAYMENTS")
    finally:
        stop_process(pid)


async def _healthy(monitor_port: int) -> bool:
    return await asyncio.to_thread(nats_healthy, monitor_port)
