"""PgBouncer (Debian's `pgbouncer` package) in front of Postgres, as in production.

Request traffic goes through it in transaction pooling, so a few server connections serve
many client connections; what needs a session (the outbox relay's LISTEN and leader lock,
migrations) keeps a direct DSN. `service_db_env` gives a service both.

PgBouncer runs as a child of the caller (not daemonized), with its ini and auth file in
the data directory it is given, on loopback TCP only (no Unix socket).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from services.cli.procs import StackError, tail

PGBOUNCER = Path("/usr/sbin/pgbouncer")
# PgBouncer refuses to run as root; as root it is started with `-u` this user, which only
# needs the listening socket: the ini and auth file are read before it switches.
RUN_AS_WHEN_ROOT = "nobody"
log = logging.getLogger("marketplace.stack")


@dataclass(frozen=True)
class Pooler:
    """A running PgBouncer: stop it with `stop_pgbouncer`."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: Path
    log_file: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def dsn(self, direct_dsn: str) -> str:
        """The same role, password and database as `direct_dsn`, through this pooler."""
        return via(direct_dsn, self.host, self.port)


def via(dsn: str, host: str, port: int) -> str:
    """`dsn` with its host and port replaced (credentials, database and query kept)."""
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc))


def service_db_env(name: str, *, direct_dsn: str, pooled_dsn: str) -> dict[str, str]:
    """What a service reads to use a pooler: requests through it, its session direct."""
    x = name.upper()
    return {
        f"{x}_DATABASE_URL": pooled_dsn,
        f"{x}_DATABASE_SESSION_URL": direct_dsn,
        f"{x}_DB_POOLER": "true",
    }


def auth_file(users: Mapping[str, str]) -> str:
    """PgBouncer's userlist: `"name" "password"`, a double quote doubled.

    Plain passwords, so PgBouncer can log in to Postgres with SCRAM for each role (a
    stored SCRAM secret only works when it is byte for byte the server's, salt included)."""

    def quoted(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    return "".join(f"{quoted(u)} {quoted(p)}\n" for u, p in sorted(users.items()))


def pgbouncer_ini(
    *, listen_port: int, pg_host: str, pg_port: int, auth_path: Path, pool_mode: str,
    default_pool_size: int, max_client_conn: int, listen_addr: str = "127.0.0.1",
) -> str:
    """The ini: every database of the server, by the same name, SCRAM both ways."""
    return f"""\
;; Written by services/cli/pooler.py on every start; change the generator, not this file.
[databases]
* = host={pg_host} port={pg_port}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {listen_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth_path}
pool_mode = {pool_mode}
default_pool_size = {default_pool_size}
max_client_conn = {max_client_conn}
; A client waiting for a server connection gets an error after this long, rather than
; waiting past its own command timeout.
query_wait_timeout = 10
; After a failed server login (Postgres restarting), try again soon, not after 15 s.
server_login_retry = 1
logfile =
pidfile =
"""


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _command(binary: Path, ini: Path, run_as: str | None) -> list[str]:
    if os.geteuid() != 0:
        return [str(binary), str(ini)]
    if not run_as:
        raise StackError("PgBouncer refuses to run as root: give run_as (an OS user)")
    return [str(binary), "-u", run_as, str(ini)]


def start_pgbouncer(
    data_dir: Path, *, listen_port: int, pg_host: str, pg_port: int,
    users: Mapping[str, str], pool_mode: str = "transaction", default_pool_size: int = 20,
    max_client_conn: int = 1000, run_as: str | None = RUN_AS_WHEN_ROOT,
    binary: Path = PGBOUNCER, timeout: float = 15.0,
) -> Pooler:
    """Write the ini and auth file into `data_dir`, start PgBouncer on loopback
    `listen_port` in front of `pg_host:pg_port`, and wait until it listens.

    `users` maps each login role to its password. As root it runs as `run_as`."""
    if not binary.exists():
        raise StackError(f"{binary} not found: `make run` and `make test` install pgbouncer")
    data_dir.mkdir(parents=True, exist_ok=True)
    auth_path, ini = data_dir / "userlist.txt", data_dir / "pgbouncer.ini"
    _write_private(auth_path, auth_file(users))
    _write_private(ini, pgbouncer_ini(
        listen_port=listen_port, pg_host=pg_host, pg_port=pg_port, auth_path=auth_path,
        pool_mode=pool_mode, default_pool_size=default_pool_size,
        max_client_conn=max_client_conn,
    ))  # fmt: skip
    log_file = data_dir / "pgbouncer.log"
    with log_file.open("ab") as out:
        # Own session: a Ctrl-C in the terminal must not stop it before the services.
        proc = subprocess.Popen(
            _command(binary, ini, run_as), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    pooler = Pooler(proc, "127.0.0.1", listen_port, data_dir, log_file)
    deadline = time.monotonic() + timeout
    while not _listening(pooler.host, listen_port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pgbouncer(pooler)
            raise StackError(
                f"PgBouncer did not start on port {listen_port}; last lines of {log_file}:\n"
                f"{tail(log_file)}"
            )
        time.sleep(0.05)
    log.info("event=pgbouncer.started port=%s pid=%s mode=%s", listen_port, proc.pid, pool_mode)
    return pooler


def stop_pgbouncer(pooler: Pooler, *, timeout: float = 10.0) -> None:
    """SIGTERM (PgBouncer's immediate shutdown), then SIGKILL if it lingers; reaped."""
    if pooler.proc.poll() is None:
        pooler.proc.terminate()
        try:
            pooler.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pooler.proc.kill()
            pooler.proc.wait()
    log.info("event=pgbouncer.stopped pid=%s", pooler.pid)
