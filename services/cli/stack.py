"""The local stack: Postgres and NATS under `<repo>/.data/` (or MARKETPLACE_DATA_DIR),
recorded in `.data/stack.json`.

`DATABASE_URL` (a superuser URL) and `NATS_URL` replace the embedded servers, each on its
own. Other commands (`marketplace seed`, `audit`, `migrate`) find the stack through
`read_state()` without flags.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.cli import dbsetup
from services.cli.natsserver import (
    NATS_ADMIN_USER,
    NATS_DEFAULT_PORT,
    NATS_MONITOR_DEFAULT_PORT,
    NatsServer,
    is_our_nats,
    nats_healthy,
    start_nats,
    stop_nats,
    with_credentials,
)
from services.cli.pgserver import PG_DEFAULT_PORT, running_postgres, start_postgres, stop_postgres
from services.cli.procs import StackError
from services.cli.secrets import LocalSecrets, write_private

log = logging.getLogger("marketplace.stack")
DATA_DIR_ENV = "MARKETPLACE_DATA_DIR"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DataPaths:
    """Where the local stack keeps its state: `<repo>/.data`, or MARKETPLACE_DATA_DIR."""

    root: Path

    @classmethod
    def default(cls, env: Mapping[str, str] = os.environ) -> DataPaths:
        # An environment variable rather than a flag: every command (those forwarded to
        # other modules too) then finds the same stack, e.g. a second one beside .data.
        return cls(Path(env.get(DATA_DIR_ENV) or repo_root() / ".data"))

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def nats_conf(self) -> Path:
        return self.root / "nats.conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def jwt_key(self) -> Path:
        return self.root / "keys" / "jwt-ed25519.pem"


@dataclass(frozen=True)
class Stack:
    """A running stack, and which of its servers this process started (so it stops them)."""

    admin_dsn: str  # superuser, pointing at `database`
    database: str
    nats_url: str
    started_postgres: bool = False
    started_nats: bool = False


def redact(dsn: str) -> str:
    """The URL with its password replaced by ***, for printing."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def read_state(paths: DataPaths | None = None) -> dict[str, Any]:
    """`.data/stack.json`: admin_dsn, database, nats_url, dsns{role: dsn}, postgres{}, nats{}."""
    file = (paths or DataPaths.default()).state_file
    return json.loads(file.read_text()) if file.exists() else {}


def local_dsns(paths: DataPaths | None = None) -> dict[str, str]:
    """Each role's DSN on the local stack (orders ... analytics, auditor), from stack.json."""
    dsns = read_state(paths).get("dsns")
    if not isinstance(dsns, dict) or dbsetup.AUDITOR not in dsns:
        raise StackError(
            "no local stack recorded in .data/stack.json: run `make run` or "
            "`marketplace stack start` first"
        )
    return dsns


def write_state(paths: DataPaths, **updates: Any) -> dict[str, Any]:
    """Merge `updates` into stack.json (mode 0600: it holds DSNs with passwords)."""
    state = read_state(paths) | updates
    write_private(paths.state_file, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())
    return state


def _start_embedded_postgres(paths: DataPaths, secrets: LocalSecrets, port: int) -> Stack:
    server = start_postgres(
        paths.pg,
        admin_password=secrets.passwords["postgres"],
        log_file=paths.logs / "postgres.log",
        port=port,
    )
    database = dbsetup.DEFAULT_DATABASE
    admin_dsn = dbsetup.with_database(server.admin_dsn, database)
    postgres = {"embedded": True, "pid": server.pid, "port": server.port, "data_dir": str(paths.pg)}
    write_state(paths, admin_dsn=admin_dsn, database=database, postgres=postgres)
    return Stack(admin_dsn, database, "", started_postgres=server.started)


def _start_embedded_nats(
    paths: DataPaths, previous: Mapping[str, Any], secrets: LocalSecrets
) -> NatsServer:
    pid: int | None = previous.get("pid")
    if pid and is_our_nats(pid, paths.nats_conf) and nats_healthy(previous["monitor_port"]):
        log.info("event=nats.reused pid=%s port=%s", pid, previous["port"])
        return NatsServer(previous["url"], previous["port"], previous["monitor_port"], pid, False)
    server = start_nats(
        paths.nats_conf,
        paths.nats_store,
        log_file=paths.logs / "nats.log",
        port=previous.get("port", NATS_DEFAULT_PORT),
        monitor_port=previous.get("monitor_port", NATS_MONITOR_DEFAULT_PORT),
        users=secrets.nats_passwords,  # one user per service, each with its own subjects
    )
    admin_password = secrets.nats_passwords[NATS_ADMIN_USER]
    write_state(
        paths,
        nats_url=server.url,
        admin_nats_url=with_credentials(server.url, NATS_ADMIN_USER, admin_password),
        nats={
            "embedded": True,
            "pid": server.pid,
            "port": server.port,
            "monitor_port": server.monitor_port,
            "url": server.url,
            "config": str(paths.nats_conf),
        },
    )
    return server


def start_stack(
    paths: DataPaths, *, env: Mapping[str, str], secrets: LocalSecrets, with_nats: bool = True
) -> Stack:
    """Start (or reuse) Postgres and NATS, honouring DATABASE_URL and NATS_URL in `env`.

    Without `with_nats` the caller runs NATS itself (`up --nats-cluster`): Postgres only."""
    paths.root.mkdir(parents=True, exist_ok=True)
    state = read_state(paths)
    if env.get("DATABASE_URL"):
        database = dbsetup.database_of(env["DATABASE_URL"])
        pg = Stack(dbsetup.with_database(env["DATABASE_URL"], database), database, "")
        # Merge, not replace: an embedded server still running stays recorded, so
        # `stack stop` can still find it.
        postgres = state.get("postgres", {}) | {"embedded": False}
        write_state(paths, admin_dsn=pg.admin_dsn, database=database, postgres=postgres)
    else:
        port = state.get("postgres", {}).get("port") or PG_DEFAULT_PORT
        pg = _start_embedded_postgres(paths, secrets, port)
    if not with_nats:
        if env.get("NATS_URL"):
            raise StackError("NATS_URL names a NATS server, and --nats-cluster starts one: "
                             "unset NATS_URL or drop --nats-cluster")
        return pg
    if env.get("NATS_URL"):
        nats_url, started_nats = env["NATS_URL"], False
        nats_record = state.get("nats", {}) | {"embedded": False}
        write_state(paths, nats_url=nats_url, nats=nats_record)
    else:
        try:
            nats = _start_embedded_nats(paths, state.get("nats", {}), secrets)
        except BaseException:
            if pg.started_postgres:  # leave nothing behind that we started
                stop_postgres(paths.pg)
            raise
        nats_url, started_nats = nats.url, nats.started
    return Stack(pg.admin_dsn, pg.database, nats_url, pg.started_postgres, started_nats)


def current_stack(paths: DataPaths, env: Mapping[str, str]) -> Stack:
    """The stack as recorded and running (DATABASE_URL/NATS_URL win); starts nothing."""
    state = read_state(paths)
    if env.get("DATABASE_URL"):
        url = env["DATABASE_URL"]
        database = dbsetup.database_of(url)
        admin_dsn = dbsetup.with_database(url, database)
    elif state.get("postgres", {}).get("embedded") and running_postgres(paths.pg):
        admin_dsn, database = state["admin_dsn"], state["database"]
    else:
        raise StackError(
            "Postgres is not running: start it with `marketplace stack start` (or `make run`), "
            "or set DATABASE_URL to an existing server"
        )
    return Stack(admin_dsn, database, env.get("NATS_URL") or state.get("nats_url", ""))


def stop_stack(paths: DataPaths, *, only_started_by: Stack | None = None) -> list[str]:
    """Stop our embedded servers (recorded in stack.json, or running on .data/pg).

    With `only_started_by`, stop only the servers that stack handle started.
    """
    state = read_state(paths)
    stopped: list[str] = []
    nats = state.get("nats", {})
    want_nats = only_started_by is None or only_started_by.started_nats
    if want_nats and stop_nats(nats.get("pid"), paths.nats_conf):
        stopped.append("nats")
    if only_started_by is None:  # a cluster left by an `up --nats-cluster` that was killed
        nodes = nats.get("nodes") or []
        stopped += [f"nats {n['name']}" for n in nodes if stop_nats(n["pid"], Path(n["config"]))]
    want_pg = only_started_by is None or only_started_by.started_postgres
    if want_pg and stop_postgres(paths.pg):
        stopped.append("postgres")
    return stopped


def stack_status(paths: DataPaths) -> dict[str, dict[str, Any]]:
    """What runs: for postgres and nats, {running, embedded, pid, url}."""
    state = read_state(paths)
    pg, nats = state.get("postgres", {}), state.get("nats", {})
    pg_running = running_postgres(paths.pg) if pg.get("embedded") else None
    pg_status = {
        "embedded": bool(pg.get("embedded")),
        "running": pg_running is not None if pg.get("embedded") else None,
        "pid": pg_running[0] if pg_running else None,
        "url": redact(state["admin_dsn"]) if "admin_dsn" in state else None,
    }
    nats_running = bool(nats.get("embedded")) and is_our_nats(nats.get("pid"), paths.nats_conf)
    if nats.get("cluster"):
        return {"postgres": pg_status, "nats": _cluster_status(nats)}
    return {
        "postgres": pg_status,
        "nats": {
            "embedded": bool(nats.get("embedded")),
            "running": (nats_running and nats_healthy(nats["monitor_port"]))
            if nats.get("embedded")
            else None,
            "pid": nats.get("pid") if nats_running else None,
            "url": state.get("nats_url"),
        },
    }


def _cluster_status(nats: Mapping[str, Any]) -> dict[str, Any]:
    """`up --nats-cluster`'s three nodes: running when every one is ours and healthy."""
    nodes = nats.get("nodes") or []
    live = [n for n in nodes if is_our_nats(n["pid"], Path(n["config"]))]
    healthy = len(live) == len(nodes) > 0 and all(nats_healthy(n["monitor_port"]) for n in live)
    return {"embedded": True, "running": healthy, "pid": ",".join(str(n["pid"]) for n in live),
            "url": nats.get("url")}


async def bootstrap_stack(paths: DataPaths, stack: Stack, secrets: LocalSecrets) -> dict[str, str]:
    """Bootstrap the database and record each role's DSN in stack.json; returns the DSNs."""
    try:
        await dbsetup.bootstrap(stack.admin_dsn, stack.database, secrets.passwords)
    except asyncpg.InvalidPasswordError as exc:
        raise StackError(
            f"Postgres at {redact(stack.admin_dsn)} rejected the admin password ({exc}); for the "
            "embedded server, .data/secrets.json no longer matches .data/pg: `make clean` starts "
            "over (deleting local data); with DATABASE_URL, fix the URL"
        ) from exc
    except OSError as exc:
        raise StackError(
            f"cannot reach Postgres at {redact(stack.admin_dsn)} ({exc}); "
            "start it with `marketplace stack start` or check DATABASE_URL"
        ) from exc
    dsns = dbsetup.role_dsns(stack.admin_dsn, stack.database, secrets.passwords)
    write_state(paths, dsns=dsns)
    return dsns
