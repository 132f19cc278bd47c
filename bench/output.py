"""Bench results: rows, the CSV, the PNG chart and the printed (and markdown) table."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bench.generator import Step


@dataclass
class Row:
    kind: str  # stack, overload, at-70%, pgbench, monolith, hello, browse, flash...
    rate_offered: float
    shape: str = ""  # --shapes: single or topology (the stack it ran against)
    sent: int = 0
    achieved_per_s: float = math.nan  # 2xx answers a second
    confirmed_per_s: float = math.nan  # 201 a second (checkouts paid; pgbench: tps)
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    admitted_p99_ms: float = math.nan
    lag_p99_ms: float = math.nan
    error_rate: float = math.nan
    shed_rate: float = math.nan
    shed_with_retry_after: float = math.nan  # share of shed answers that had Retry-After
    generator_cpu_pct: float = math.nan
    cpu_ms_per_order: float = math.nan  # CPU of services + Postgres + NATS per confirmed order
    statements_per_order: float = math.nan  # the services' SQL statements per confirmed order
    publishes_per_order: float = math.nan  # acked JetStream publishes per confirmed order
    ratio_to_pgbench: float = math.nan
    ratio_to_monolith: float = math.nan
    ratio_to_hello: float = math.nan
    batch_place: float = math.nan  # mean checkouts per placing statement
    batch_pay: float = math.nan  # mean checkouts per AuthorizeBatch call
    batch_settle: float = math.nan  # mean checkouts per settling statement

    @classmethod
    def of(cls, kind: str, step: Step, *, lag_p99_ms: float = math.nan,
           cpu_ms_per_order: float = math.nan) -> Row:
        s = step.summary
        return cls(
            kind=kind, rate_offered=s.rate, sent=s.sent, achieved_per_s=s.ok_per_s,
            confirmed_per_s=s.confirmed_per_s, p50_ms=s.p50_ms, p95_ms=s.p95_ms,
            p99_ms=s.p99_ms, admitted_p99_ms=s.admitted_p99_ms, lag_p99_ms=lag_p99_ms,
            error_rate=s.error_rate, shed_rate=s.shed_rate,
            shed_with_retry_after=s.shed_with_retry_after / s.shed if s.shed else math.nan,
            generator_cpu_pct=step.generator_cpu_pct, cpu_ms_per_order=cpu_ms_per_order,
        )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def write_csv(rows: list[Row], path: Path) -> None:
    names = [f.name for f in fields(Row)]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in asdict(row).items()})


def write_records(records: list[dict[str, object]], path: Path) -> None:
    """Rows of any shape (the keys of the first are the columns), cells as in write_csv."""
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else [])
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(v) for k, v in record.items()})


def records_table(records: list[dict[str, object]]) -> str:
    """The printed table of write_records' rows."""
    if not records:
        return ""
    head = list(records[0])
    body = [[_cell(r.get(k)) or "-" for k in head] for r in records]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    return "\n".join("  ".join(f"{c:>{w}}" for c, w in zip(line, widths, strict=True))
                     for line in [head, *body])


TABLE = (("kind", "kind"), ("rate/s", "rate_offered"), ("confirmed/s", "confirmed_per_s"),
         ("ok/s", "achieved_per_s"), ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"),
         ("p99 ms", "p99_ms"), ("lag p99 ms", "lag_p99_ms"), ("errors", "error_rate"),
         ("shed", "shed_rate"), ("gen CPU %", "generator_cpu_pct"),
         ("CPU ms/order", "cpu_ms_per_order"),
         ("/pgbench", "ratio_to_pgbench"), ("/monolith", "ratio_to_monolith"))


def table(rows: list[Row], *, markdown: bool = False) -> str:
    head = [h for h, _ in TABLE]
    body = [[_cell(getattr(r, k)) or "-" for _, k in TABLE] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def chart(rows: list[Row], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stack = [r for r in rows if r.kind == "stack"]
    rates = [r.rate_offered for r in stack]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax[0][0].plot(rates, [getattr(r, key) for r in stack], marker="o", label=label)
    for r in rows:
        if r.kind == "at-70%":
            ax[0][0].plot([r.rate_offered], [r.p99_ms], marker="*", markersize=12,
                          linestyle="", color="tab:green", label="p99 at 70 % of max")
    ax[0][0].axhline(150, color="red", linestyle="--", label="150 ms")
    ax[0][0].set(title="checkout latency (from intended send)", xlabel="offered orders/s",
                 ylabel="ms", yscale="log")
    ax[0][0].legend()
    ax[0][1].plot(rates, [r.confirmed_per_s for r in stack], marker="o", label="confirmed/s")
    ax[0][1].plot(rates, rates, linestyle=":", color="grey", label="offered")
    ax[0][1].set(title="throughput", xlabel="offered orders/s", ylabel="orders/s")
    ax[0][1].legend()
    ceilings = [(r.kind, r.confirmed_per_s if r.kind in ("pgbench", "monolith") else
                 r.achieved_per_s) for r in rows if r.kind in
                ("pgbench", "monolith", "hello", "browse")]
    best = max((r.confirmed_per_s for r in stack), default=0.0)
    names = [n for n, _ in ceilings] + ["stack checkout"]
    ax[1][0].bar(names, [v for _, v in ceilings] + [best], color="tab:blue")
    ax[1][0].set(title="ceilings (requests or transactions /s)", ylabel="/s")
    ax[1][1].plot(rates, [r.lag_p99_ms for r in stack], marker="o", label="p99 lag to analytics")
    ax[1][1].plot(rates, [r.generator_cpu_pct for r in stack], marker="s",
                  label="generator CPU %")
    ax[1][1].set(title="event lag (ms) and generator CPU (%)", xlabel="offered orders/s")
    ax[1][1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
