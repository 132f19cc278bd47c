"""Small process and port helpers shared by the stack and the launcher."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import psutil

PORT_SPAN = 50
log = logging.getLogger("marketplace.stack")


class StackError(RuntimeError):
    """A stack step failed; the message says what to do next."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Mirror the servers (they set SO_REUSEADDR), so TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_port(preferred: int, what: str, *, avoid: tuple[int, ...] = (), hint: str = "") -> int:
    """`preferred` or the next free port above it."""
    for port in range(preferred, preferred + PORT_SPAN):
        if port not in avoid and port_free(port):
            return port
    raise StackError(
        f"{what}: port {preferred} busy and no free port found in "
        f"{preferred}-{preferred + PORT_SPAN - 1}; {hint or 'free one of them'}"
    )


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"


def cmdline_of(pid: int | None) -> list[str]:
    """The command line of a live process, or [] (gone, zombie or not ours to read)."""
    if pid is None:
        return []
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return []
        return proc.cmdline()
    except psutil.Error:
        return []


def stop_process(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM `pid`, wait up to `timeout` seconds, then SIGKILL. Callers check it is ours."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        log.warning("event=process.kill pid=%s reason=no_exit_after_sigterm", pid)
        proc.kill()
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass
