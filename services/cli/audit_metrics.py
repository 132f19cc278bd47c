"""The audit as Prometheus metrics: `marketplace audit` run every `--every` seconds, its
outcome served on `:<port>/metrics` for Prometheus to scrape (no Pushgateway).

    python -m services.cli.audit_metrics --port 9108 --every 3600

In Kubernetes: the `audit-exporter` Deployment of deploy/monitoring/, scraped by its
PodMonitor; the alerts MarketplaceAuditFailed and MarketplaceAuditNotRunning read it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from services.cli import audit

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
RUNS = Counter("marketplace_audit_runs_total", "Audit runs by result (clean, violations, error)",
               ["result"], registry=REGISTRY)
FAILED_CHECKS = Gauge("marketplace_audit_failed_checks",
                      "Invariants the last completed audit found violated", registry=REGISTRY)
VIOLATIONS = Gauge("marketplace_audit_violations",
                   "Violations per invariant in the last completed audit", ["check"],
                   registry=REGISTRY)
LAST_RUN = Gauge("marketplace_audit_last_run_timestamp_seconds",
                 "When the last audit completed (whatever it found)", registry=REGISTRY)
DURATION = Gauge("marketplace_audit_duration_seconds", "How long the last completed audit took",
                 registry=REGISTRY)


def record(results: list[audit.Check], *, seconds: float, now: float) -> None:
    """The metrics of one completed audit."""
    failed = [c for c in results if not c.ok]
    RUNS.labels("violations" if failed else "clean").inc()
    FAILED_CHECKS.set(len(failed))
    for check in results:
        VIOLATIONS.labels(check.name).set(len(check.violations))
    DURATION.set(seconds)
    LAST_RUN.set(now)


async def run_once(dsn: str, *, settle_s: float) -> bool:
    """One audit, recorded; False when it could not run (Postgres unreachable, say)."""
    start = time.monotonic()
    try:
        results = await audit.run_audit(dsn, settle_s=settle_s)
    except Exception as exc:  # recorded and retried next round; the process keeps serving
        RUNS.labels("error").inc()
        log.warning("audit failed to run", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    record(results, seconds=time.monotonic() - start, now=time.time())
    return True


async def run_forever(dsn: str, *, every_s: float, settle_s: float) -> None:
    while True:
        await run_once(dsn, settle_s=settle_s)
        await asyncio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.cli.audit_metrics",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="Postgres URL (default: DATABASE_URL, else the local "
                                      "stack's auditor role)")
    parser.add_argument("--port", type=int, default=9108, help="where /metrics is served")
    parser.add_argument("--every", type=float, default=3600.0, help="seconds between audits")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait for event-driven projections to catch up")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    start_http_server(ns.port, registry=REGISTRY)
    asyncio.run(run_forever(ns.dsn or audit.auditor_dsn(), every_s=ns.every,
                            settle_s=ns.settle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
