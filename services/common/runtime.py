"""The composition root every service shares: infrastructure, servers, background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import asyncpg
import uvicorn
from fastapi import FastAPI
from grpc import aio

from services.common import db, grpcutil, metrics, outbox, purge, telemetry
from services.common.bus import Bus
from services.common.inbox import Consumer
from services.common.migrations import migrate
from services.common.outbox import OutboxRelay
from services.common.purge import Purge
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
# How long /readyz waits for JetStream's answer about a consumer before it reports the lag
# last seen: well inside a load balancer's health-check timeout (HAProxy's here: 1 s).
LAG_PROBE_S = 0.3
# How long /readyz waits for a pooled connection before it reports Postgres busy.
POOL_PROBE_S = 0.3
# Direct connections (to `session_dsn`) one process holds at once besides its request
# pool: the migration's at start-up, closed before the outbox relay opens its own (held
# for good; a standby's polls for the leader lock). The connection budget of deploy/
# counts them (tests/deploy/test_pooler_budget.py).
SESSIONS_PER_PROCESS = 1
ContextT = TypeVar("ContextT")
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


@dataclass
class Infra:
    """What a running service holds: its pool, the bus, the relay and its consumers."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    bus: Bus
    relay: OutboxRelay
    consumers: list[Consumer] = field(default_factory=list)
    draining: bool = False  # stopping: /readyz says so, so balancers stop sending requests
    # Each consumer's lag as last read from JetStream (by /readyz or the observe loop).
    lags: dict[str, int | None] = field(default_factory=dict)
    # What the purge deletes: the shared tables' (start_infra), then the service's own.
    purges: list[Purge] = field(default_factory=list)

    async def readiness(self) -> dict[str, Any]:
        """Postgres, NATS, the relay and each consumer with its lag and dead letters."""
        detail: dict[str, Any] = {}
        if self.draining:
            detail["draining"] = {"ok": False, "instance": self.settings.instance_id}
        dead = None
        try:
            async with self.pool.acquire(timeout=POOL_PROBE_S) as conn:
                dead = await conn.fetchval(
                    "SELECT count(*) FROM dead_letter WHERE retried_at IS NULL"
                )
            detail["postgres"] = {"ok": True}
        except TimeoutError:
            # Every connection is taken, by requests that are using Postgres: busy, not
            # down. Overload is answered by shedding (503 + Retry-After); failing the probe
            # would take the busiest replicas out of the balancer together.
            detail["postgres"] = {"ok": True, "busy": True}
        except Exception as exc:
            detail["postgres"] = {"ok": False, "error": str(exc)}
        detail["nats"] = {"ok": self.bus.connected}
        # A relay that cannot publish leaves the replica ready (its error shows here and its
        # backlog in the outbox alerts): every replica publishes to the same NATS, so
        # leaving the balancer mends nothing, and requests (checkouts) never wait for the
        # relay. While a NATS cluster elected a stream leader, the lock passing between
        # failing replicas took every orders replica out of the balancer at once.
        detail["outbox"] = {
            "ok": True,
            "leader": self.relay.is_leader,
            "backlog": self.relay.backlog,
            "published": self.relay.published_total,
            "error": self.relay.last_error,
        }
        consumers = {}
        lags = await asyncio.gather(*(self._lag(c) for c in self.consumers))
        for c, lag in zip(self.consumers, lags, strict=True):
            consumers[c.name] = {
                "lag": lag, "applied": c.applied_total,
                "duplicates": c.duplicates_total, "batch_fallbacks": c.fallbacks_total,
                "last_error": c.last_error,
            }
        detail["consumers"] = {"ok": True, "items": consumers, "dead_letters": dead}
        return detail

    async def _lag(self, consumer: Consumer) -> int | None:
        """The consumer's lag now, or as last seen when JetStream does not answer at once:
        a balancer probes every second with a short timeout, and during a NATS election
        JetStream took seconds to answer, so every replica failed its probe together."""
        try:
            lag = await asyncio.wait_for(consumer.lag(), LAG_PROBE_S)
        except TimeoutError:
            return self.lags.get(consumer.name)
        self.lags[consumer.name] = lag
        return lag


async def start_infra(settings: ServiceSettings, service_dir: Path) -> Infra:
    """Migrate the schema, open the pool, connect to NATS and make sure the streams exist.

    Requests use `database_url` (a transaction pooler in production); migrations and the
    relay use the direct `session_dsn`, one after the other (SESSIONS_PER_PROCESS).
    """
    session = await db.connect(
        settings.session_dsn, schema=settings.schema,
        application_name=f"{settings.service_name}-migrate", connect_attempts=30,
    )  # fmt: skip
    try:
        await migrate(session, schema=settings.schema, service_dir=service_dir)
    finally:
        await session.close()
    pool = await db.create_pool(
        settings.database_url.get_secret_value(), schema=settings.schema,
        application_name=settings.service_name, min_size=settings.db_pool_min,
        max_size=settings.db_pool_max, pooler=settings.db_pooler,
    )  # fmt: skip
    bus = await Bus.connect(
        settings.nats_url, name=settings.service_name, replicas=settings.nats_stream_replicas
    )
    await bus.ensure_streams()
    relay = OutboxRelay(settings.session_dsn, bus, schema=settings.schema,
                        linger_s=settings.outbox_linger_ms / 1000)
    return Infra(settings=settings, pool=pool, bus=bus, relay=relay,
                 purges=purge.shared(settings))


async def _observe(infra: Infra) -> None:
    """Refresh gauges; every `purge_interval_s`, purge what retention no longer keeps."""
    next_purge = 0.0
    loop = asyncio.get_running_loop()
    while True:
        await _observe_outbox(infra.pool)
        for c in infra.consumers:
            lag = infra.lags[c.name] = await c.lag()
            if lag is not None:
                metrics.CONSUMER_LAG.labels(c.name).set(lag)
        if loop.time() >= next_purge:
            await purge_once(infra)
            next_purge = loop.time() + infra.settings.purge_interval_s
        await asyncio.sleep(5)


async def _observe_outbox(pool: asyncpg.Pool) -> None:
    """The outbox backlog and its oldest row's age, as the table has them; the last values
    stay while Postgres does not answer (the relay's own error shows in /readyz)."""
    try:
        backlog, age_s = await asyncio.wait_for(outbox.backlog(pool), POOL_PROBE_S * 10)
    except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
        log.debug("outbox gauges not refreshed", extra={"error": str(exc)})
        return
    metrics.OUTBOX_BACKLOG.set(backlog)
    metrics.OUTBOX_AGE.set(age_s)


async def purge_once(infra: Infra) -> bool:
    """Purge what retention no longer keeps, once per cluster: every replica tries, and the
    one holding the schema's purge lock does it, batch by batch (services/common/purge.py).
    False if another replica was purging; a failure is logged and the next pass tries again."""
    settings = infra.settings
    try:
        purged = await purge.purge_all(infra.pool, infra.purges, lock=f"purge:{settings.schema}",
                                       batch=settings.purge_batch)
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("purge failed; retried next pass", extra={"error": str(exc)})
        return False
    if purged is None:
        return False
    log.info("purged", extra={"rows": purged})
    return True


@dataclass
class Service(Generic[ContextT]):
    """A started service, as every `bootstrap.start(settings, ...)` returns it: what `serve`
    runs, and what tests reach into. `context` is what the routes get (`app.state.ctx`)."""

    infra: Infra
    app: FastAPI
    context: ContextT
    grpc_server: aio.Server | None = None  # with its port; None where a service serves no gRPC
    grpc_port: int | None = None
    # The full names of the services grpc_server serves: `serve` adds health (one status
    # each) and reflection (listing them) to it.
    grpc_services: tuple[str, ...] = ()
    tasks: list[Coroutine[Any, Any, None]] = field(default_factory=list)  # besides the relay's


async def serve(
    service: Service[Any], *, stop: asyncio.Event | None = None, stop_within_s: float = 10.0
) -> None:
    """Run HTTP, gRPC and the background loops until SIGTERM/SIGINT (or `stop`), then stop.

    On the way out the background loops are cancelled and waited for `stop_within_s` at
    most; one that does not end by then is named in a warning, and the bus and the pool
    are closed anyway.
    """
    infra, grpc_server, settings = service.infra, service.grpc_server, service.infra.settings
    health = None
    if grpc_server is not None:
        health = grpcutil.add_health_and_reflection(grpc_server, service.grpc_services)
        grpc_server.add_insecure_port(f"{settings.http_host}:{service.grpc_port}")
        await grpc_server.start()
        await health.serving()
    config = uvicorn.Config(
        service.app, host=settings.http_host, port=settings.http_port, log_config=None,
        access_log=False, loop="none", lifespan="on", timeout_graceful_shutdown=5,
        backlog=2048,
        # Longer than any client's or load balancer's idle timeout (commonly 60 s): the
        # side that closes an idle connection first must be the client, or a request sent
        # on it as the server closes it fails with a connection reset.
        timeout_keep_alive=75,
    )
    http = uvicorn.Server(config)
    http.install_signal_handlers = lambda: None  # type: ignore[method-assign, attr-defined]
    if stop is None:  # run as a process: signals stop it; in tests the caller does
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    background = _start_background(service)
    server_task = asyncio.create_task(_serve_http(http, settings), name="http")
    metrics.INSTANCE_INFO.labels(settings.service_name, settings.instance_id).set(1)
    log.info(
        "service started",
        extra={"http_port": settings.http_port, "grpc_port": service.grpc_port},
    )
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([server_task, stopped], return_when=asyncio.FIRST_COMPLETED)
        log.info("service stopping", extra={"drain_s": settings.drain_s})
        # Balancers and probes learn it together: /readyz answers 503 and gRPC health
        # NOT_SERVING from here on, while both servers still serve for drain_s.
        infra.draining = True
        if health is not None:
            await health.draining()
        if settings.drain_s and not server_task.done():
            await asyncio.sleep(settings.drain_s)  # still serving, while /readyz says 503
        http.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        with contextlib.suppress(asyncio.CancelledError):
            await server_task  # raises if the HTTP server could not start
    finally:  # stopped, failed or cancelled: nothing keeps running behind the caller's back
        if not server_task.done():  # cancelled (while draining, say): still close the port
            http.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(server_task, timeout=stop_within_s)
        if grpc_server is not None:
            await grpc_server.stop(grace=None)  # at once; a no-op when already stopped
        for task in [*background, stopped]:
            task.cancel()
        done, late = await asyncio.wait([*background, stopped], timeout=stop_within_s)
        for task in done:  # retrieved, so that asyncio does not report them as lost
            if not task.cancelled():
                task.exception()
        if late:
            log.warning("background tasks did not stop in time; closing without them",
                        extra={"tasks": sorted(t.get_name() for t in late),
                               "waited_s": stop_within_s})
        await infra.bus.close()
        await infra.pool.close()
        log.info("service stopped")


def _start_background(service: Service[Any]) -> list[asyncio.Task[None]]:
    """The outbox relay, the consumers, the service's own loops and the gauges."""
    infra = service.infra
    background = [asyncio.create_task(infra.relay.run(), name="outbox-relay")]
    background += [asyncio.create_task(c.run(), name=c.name) for c in infra.consumers]
    background += [asyncio.create_task(t, name=getattr(t, "__qualname__", None))
                   for t in service.tasks]
    background.append(asyncio.create_task(_observe(infra), name="observe"))
    return background


async def _serve_http(http: uvicorn.Server, settings: ServiceSettings) -> None:
    """uvicorn exits the process (SystemExit) when it cannot listen; say why as an error
    the caller can handle, and what to change."""
    try:
        await http.serve()
    except SystemExit as exc:
        prefix = settings.model_config.get("env_prefix", "")
        raise RuntimeError(
            f"the HTTP server could not start on {settings.http_host}:{settings.http_port} "
            f"(exit {exc.code}; the reason is logged just above, most often the port is "
            f"taken): free the port or set {prefix}HTTP_PORT") from None


def run_main(
    start: Callable[[SettingsT], Awaitable[Service[Any]]], settings: SettingsT
) -> None:
    """A service's process: logging, tracing and uvloop, then `start` it and `serve` it
    until a signal stops it."""
    telemetry.setup_logging(settings.service_name, settings.log_level,
                            instance=settings.instance_id)
    telemetry.setup_tracing(settings.service_name, instance=settings.instance_id)

    async def main() -> None:
        await serve(await start(settings))

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
