"""Prometheus metrics every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
# 1 for the process: which replica of which service answers this scrape (and its traces
# and logs carry the same instance id).
INSTANCE_INFO = Gauge("marketplace_instance_info", "This process: its service and instance id",
                      ["service", "instance_id"])
HTTP_REJECTED = Counter("http_rejected_total", "Requests shed with 503 (overload)")
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox rows waiting to be published (last batch)")
OUTBOX_PUBLISHED = Gauge("outbox_published_total", "Outbox rows published by this process")
CONSUMER_LAG = Gauge("consumer_lag_messages", "Messages not yet applied", ["consumer"])
CONSUMER_APPLIED = Gauge("consumer_applied_total", "Events applied", ["consumer"])
CONSUMER_DEAD = Gauge("consumer_dead_lettered_total", "Events dead-lettered", ["consumer"])
CONSUMER_FALLBACKS = Gauge(
    "consumer_batch_fallbacks_total",
    "Batches that failed as a whole and were applied again event by event", ["consumer"])
