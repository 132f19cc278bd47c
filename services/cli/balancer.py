"""The local load balancer for `marketplace up --replicas N`: HAProxy from Debian's package.

One frontend per service on its usual port (8000-8003), balancing over that service's
replicas, each health-checked on /readyz, so a replica that stops or drains leaves the
rotation within about two seconds and a request whose connection was refused is sent to
another replica. In Kubernetes the Service does this job; locally HAProxy does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import httpx

from services.cli.procs import StackError, stop_process, tail
from services.common.errors import PROBLEM_JSON
from services.common.web import problem_bytes

HAPROXY = "/usr/sbin/haproxy"
INSTALL_HINT = "install Debian's haproxy package (`make system-packages` does it)"
# The live dashboard's server-sent events stay open; everything else answers in seconds.
_STREAMING = {"analytics"}


@dataclass(frozen=True)
class Backend:
    """One service behind the balancer: where clients connect, where its replicas listen."""

    name: str
    port: int
    replicas: Sequence[int]


def haproxy_config(
    backends: Sequence[Backend], *, stats_socket: Path,
    errorfiles: Mapping[int, Path] | None = None,
) -> str:
    """An HAProxy 2.6 configuration: one frontend and one health-checked backend each."""
    lines = [
        "global",
        # Within the usual open-files limit: HAProxy needs two descriptors a connection.
        "  maxconn 4096",
        f"  stats socket {stats_socket} mode 600 level admin",
        "",
        "defaults",
        "  mode http",
        "  option http-keep-alive",
        # The client's address in X-Forwarded-For: the services' per-client limits (sign-in
        # attempts) would otherwise count every shopper as the balancer's one address.
        # uvicorn believes the header from 127.0.0.1 only (its forwarded_allow_ips).
        "  option forwardfor",
        # A request that failed on a dying replica is sent to another one: a connection it
        # refused, or one it closed without a byte of answer (killed with the request in
        # hand, or while its kept-alive connection was being reused). The replica may have
        # acted on such a request, so writes are sent again only with an Idempotency-Key
        # (each backend's disable-l7-retry); reads and keyed writes are safe to repeat.
        "  option redispatch 1",
        "  retries 2",
        "  retry-on conn-failure empty-response",
        "  timeout connect 2s",
        "  timeout client 75s",
        "  timeout server 60s",
        "  timeout http-keep-alive 60s",
        "  timeout queue 5s",
        # The services answer /readyz 503 while draining; two misses take a replica out.
        "  default-server inter 1s fall 2 rise 2",
        *(f"  errorfile {status} {path}" for status, path in sorted((errorfiles or {}).items())),
        "",
    ]
    for b in backends:
        lines += [
            f"frontend {b.name}",
            f"  bind 127.0.0.1:{b.port}",
            f"  default_backend {b.name}",
            "",
            f"backend {b.name}",
            "  balance leastconn",
            "  http-reuse safe",
            # A registration, say, must not run twice: a write without a key is not resent.
            "  acl write method POST PUT PATCH DELETE",
            "  http-request disable-l7-retry if write !{ req.hdr(idempotency-key) -m found }",
            "  option httpchk GET /readyz",
            "  http-check expect status 200",
        ]
        if b.name in _STREAMING:
            lines.append("  timeout server 1h")
        lines += [f"  server {b.name}-{i} 127.0.0.1:{port} check"
                  for i, port in enumerate(b.replicas, start=1)]
        lines.append("")
    return "\n".join(lines)


@dataclass
class Balancer:
    proc: subprocess.Popen[bytes]
    config_file: Path
    log_file: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc.pid, timeout=5)
        self.proc.wait()


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (HAPROXY if Path(HAPROXY).exists() else None)
    if found is None:
        raise StackError(f"--replicas needs a load balancer and haproxy is not installed: "
                         f"{INSTALL_HINT}")
    return found


def start_balancer(backends: Sequence[Backend], run_dir: Path) -> Balancer:
    """Write the configuration, check it, start HAProxy in the foreground as our child."""
    binary = haproxy_binary()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file, log_file = run_dir / "haproxy.cfg", run_dir / "haproxy.log"
    errorfiles = {}
    for status, text in _ERRORS.items():
        errorfiles[status] = run_dir / f"{status}.http"
        errorfiles[status].write_bytes(_raw_problem(status, text))
    config_file.write_text(haproxy_config(backends, stats_socket=run_dir / "haproxy.sock",
                                          errorfiles=errorfiles))
    check = subprocess.run([binary, "-c", "-q", "-f", str(config_file)],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise StackError(f"haproxy refused {config_file}: {check.stderr.strip()}")
    with log_file.open("ab") as out:
        proc = subprocess.Popen([binary, "-db", "-f", str(config_file)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    balancer = Balancer(proc, config_file, log_file)
    deadline = time.monotonic() + 10
    while not all(_listening(b.port) for b in backends):
        if proc.poll() is not None or time.monotonic() > deadline:
            balancer.stop()
            raise StackError(f"haproxy did not start; last lines of {log_file}:\n"
                             f"{tail(log_file)}")
        time.sleep(0.1)
    return balancer


# What the balancer answers itself, as the services would: problem+json with Retry-After.
_ERRORS = {
    502: "a replica failed while answering; send the request again with the same "
         "Idempotency-Key",
    503: "no replica of this service is ready right now; retry after the given seconds",
    504: "the replica did not answer in time; send the request again with the same "
         "Idempotency-Key",
}


def _raw_problem(status: int, detail: str) -> bytes:
    """A whole HTTP response for HAProxy's `errorfile`: status line, headers and body."""
    body = problem_bytes(status, "unavailable", "Service unavailable", detail)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def replica_states(run_dir: Path) -> Mapping[str, str]:
    """`<backend>/<server>` → UP/DOWN/MAINT as HAProxy sees them now (its stats socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(run_dir / "haproxy.sock"))
        sock.sendall(b"show stat\n")
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    states = {}
    for row in raw.decode().splitlines():
        cols = row.split(",")
        if len(cols) > 17 and not row.startswith("#") and cols[1] not in ("FRONTEND", "BACKEND"):
            states[f"{cols[0]}/{cols[1]}"] = cols[17].split(" ")[0]
    return states


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
    except httpx.HTTPError:
        return False
    return True
