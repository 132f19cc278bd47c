"""The load run's report: charts over time and a summary table from Locust's CSVs and the
GMV samples taken from analytics during the run."""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
from pathlib import Path
from typing import Any


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "N/A") else float("nan")
    except ValueError:
        return float("nan")


def _timeline(out: Path) -> dict[str, list[float]]:
    history = [r for r in _rows(out / "locust_stats_history.csv") if r["Name"] == "Aggregated"]
    t0 = _num(history[0]["Timestamp"]) if history else 0.0
    return {
        "t": [_num(r["Timestamp"]) - t0 for r in history],
        "users": [_num(r["User Count"]) for r in history],
        "rps": [_num(r["Requests/s"]) for r in history],
        "fails": [_num(r["Failures/s"]) for r in history],
        "p50": [_num(r["50%"]) for r in history],
        "p99": [_num(r["99%"]) for r in history],
    }


def _gmv(out: Path) -> dict[str, list[float]]:
    samples = [{k: _num(v) for k, v in r.items()} for r in _rows(out / "gmv.csv")]
    rate = [0.0] + [
        (b["orders"] - a["orders"]) / max(b["t"] - a["t"], 1e-9)
        for a, b in itertools.pairwise(samples)
    ]
    return {"t": [s["t"] for s in samples], "yuan": [s["gmv_fen"] / 100 for s in samples],
            "orders": [s["orders"] for s in samples], "orders_per_s": rate}


def _chart(tl: dict[str, list[float]], gmv: dict[str, list[float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    ax[0][0].plot(tl["t"], tl["rps"], label="requests/s")
    ax[0][0].plot(tl["t"], tl["fails"], label="failures/s", color="red")
    users = ax[0][0].twinx()
    users.plot(tl["t"], tl["users"], color="grey", linestyle=":", label="users")
    users.set_ylabel("users")
    ax[0][0].set(title="requests and failures per second", xlabel="s")
    ax[0][0].legend(loc="upper left")
    ax[0][1].plot(tl["t"], tl["p50"], label="p50")
    ax[0][1].plot(tl["t"], tl["p99"], label="p99")
    ax[0][1].set(title="latency, all requests (ms)", xlabel="s", yscale="log")
    ax[0][1].legend()
    ax[1][0].plot(gmv["t"], gmv["orders_per_s"], color="green")
    ax[1][0].set(title="confirmed orders/s (analytics)", xlabel="s")
    ax[1][1].plot(gmv["t"], gmv["yuan"], color="purple")
    ax[1][1].set(title="GMV since the start (CNY, analytics)", xlabel="s")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def summary_rows(out: Path) -> list[list[str]]:
    rows = []
    for r in _rows(out / "locust_stats.csv"):
        rows.append([r["Name"], r["Request Count"], r["Failure Count"],
                     f"{_num(r['Requests/s']):.1f}", r["50%"], r["99%"], r["Max Response Time"]
                     .split(".")[0]])
    return rows


HEAD = ["request", "count", "failures", "req/s", "p50 ms", "p99 ms", "max ms"]


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEAD)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEAD, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write(out: Path, *, audit_ok: bool, locust_code: int) -> str:
    """report.html and report.png in `out`; returns the printed summary."""
    tl, gmv = _timeline(out), _gmv(out)
    png = _chart(tl, gmv)
    (out / "report.png").write_bytes(png)
    rows = summary_rows(out)
    totals: dict[str, Any] = {
        "confirmed orders (analytics)": int(gmv["orders"][-1]) if gmv["orders"] else 0,
        "GMV (CNY)": f"{gmv['yuan'][-1]:,.2f}" if gmv["yuan"] else "0",
        "peak users": int(max(tl["users"], default=0)),
        "audit": "clean" if audit_ok else "FAILED (see audit.txt)",
        "locust exit code": locust_code,
    }
    table = _text_table(rows) if rows else "(no Locust statistics)"
    text = table + "\n\n" + "\n".join(f"{k}: {v}" for k, v in totals.items())
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows)
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>peak day load test</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        f"<h1>Peak day load test</h1><p>{html.escape(out.name)}</p>"
        "<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>"
                         for k, v in totals.items()) + "</ul>"
        f"<img alt='charts' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in HEAD) + f"</tr>{cells}</table>"
        "<p>Locust's own report: <a href='locust.html'>locust.html</a>; audit: "
        "<a href='audit.txt'>audit.txt</a>; GMV samples: <a href='gmv.csv'>gmv.csv</a></p>")
    return text
