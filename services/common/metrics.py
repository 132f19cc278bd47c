"""Prometheus metrics every service exposes on /metrics.

Named by Prometheus' conventions: one prefix (`marketplace_`), base units in the name
(`_seconds`), counters end in `_total` and only ever go up. A service's own metrics live in
its `metrics.py`; each metric is defined once. The client library's `process_*` and
`python_*` metrics (CPU, memory, file descriptors, GC) keep their standard names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol
from weakref import WeakSet

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# No `_created` series beside each counter and histogram: twice the series, unused here.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "marketplace_http_requests_total", "HTTP requests answered, by route and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "marketplace_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REJECTED = Counter(
    "marketplace_http_rejected_total",
    "Requests shed with 503 + Retry-After (overload) before reaching the app",
)
# 1 for the process: which replica of which service answers this scrape (and its traces
# and logs carry the same instance id).
INSTANCE_INFO = Gauge("marketplace_instance_info", "This process: its service and instance id",
                      ["service", "instance_id"])

# The outbox, read from the table by every replica (leader or standby), so the backlog is
# seen even while the relay that should publish it is stuck or gone.
OUTBOX_BACKLOG = Gauge(
    "marketplace_outbox_backlog", "Outbox rows not yet published (counted up to 100,000)")
OUTBOX_AGE = Gauge(
    "marketplace_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none is pending)")
OUTBOX_PUBLISHED = Counter(
    "marketplace_outbox_published_total", "Outbox rows this process published (acked)")

CONSUMER_LAG = Gauge(
    "marketplace_consumer_lag_messages", "Messages of a consumer's stream not yet applied",
    ["consumer"])
CONSUMER_APPLIED = Counter(
    "marketplace_consumer_applied_total", "Events applied by this process", ["consumer"])
CONSUMER_DEAD = Counter(
    "marketplace_consumer_dead_lettered_total", "Events moved to the dead-letter table",
    ["consumer"])
CONSUMER_FALLBACKS = Counter(
    "marketplace_consumer_batch_fallbacks_total",
    "Batches that failed as a whole and were applied again event by event", ["consumer"])

# gRPC, as go-grpc-prometheus names them (unary calls only: the services have no streams).
_GRPC = ["grpc_service", "grpc_method"]
GRPC_SERVER_HANDLED = Counter(
    "marketplace_grpc_server_handled_total", "RPCs completed on the server, by status code",
    [*_GRPC, "grpc_code"])
GRPC_SERVER_LATENCY = Histogram(
    "marketplace_grpc_server_handling_seconds", "Time the server took to answer an RPC", _GRPC,
    buckets=LATENCY_BUCKETS)
GRPC_CLIENT_HANDLED = Counter(
    "marketplace_grpc_client_handled_total", "RPCs completed by this client, by status code",
    [*_GRPC, "grpc_code"])
GRPC_CLIENT_LATENCY = Histogram(
    "marketplace_grpc_client_handling_seconds",
    "Time from sending an RPC to its answer (retries on other replicas included)", _GRPC,
    buckets=LATENCY_BUCKETS)

DB_ACQUIRE = Histogram(
    "marketplace_db_pool_acquire_duration_seconds",
    "Time to get a connection from the pool", ["pool"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class PoolState(Protocol):
    """What `PoolCollector` reads of a pool (asyncpg's Pool, with a count of waiters)."""

    name: str
    waiting: int

    def is_closing(self) -> bool: ...
    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


class PoolCollector(Collector):
    """Connection pools' state, read when scraped: in use, idle, the maximum, and how many
    acquires wait for a connection now. Pools of one name (one per process in production)
    are summed."""

    def __init__(self) -> None:
        self.pools: WeakSet[PoolState] = WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "marketplace_db_pool_connections", "Pool connections open, in use or idle",
            labels=["pool", "state"])
        limit = GaugeMetricFamily(
            "marketplace_db_pool_max_connections", "Most connections the pool opens",
            labels=["pool"])
        waiting = GaugeMetricFamily(
            "marketplace_db_pool_waiting_acquires",
            "Acquires waiting for a free connection now", labels=["pool"])
        sums: dict[str, list[int]] = {}
        for pool in list(self.pools):
            if pool.is_closing():
                continue
            size, idle = pool.get_size(), pool.get_idle_size()
            row = sums.setdefault(pool.name, [0, 0, 0, 0])
            for i, value in enumerate((size - idle, idle, pool.get_max_size(), pool.waiting)):
                row[i] += value
        for name, (in_use, idle, most, waiters) in sorted(sums.items()):
            connections.add_metric([name, "in_use"], in_use)
            connections.add_metric([name, "idle"], idle)
            limit.add_metric([name], most)
            waiting.add_metric([name], waiters)
        yield from (connections, limit, waiting)


POOLS = PoolCollector()
REGISTRY.register(POOLS)
