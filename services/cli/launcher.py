"""`marketplace up`: the stack, the database, the four services as child processes, a seed.

Services start in dependency order (membership and payments serve gRPC to orders), each
waited for on /healthz then /readyz; one that cannot start fails `up`. Once all serve, each
child process is supervised on its own (services.cli.supervisor): one that dies is logged
and started again after a back-off, while the others keep serving, and stack.json follows
its new pid. Ctrl-C stops the services, then whatever part of the stack this run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.cli.dbsetup import AUDITOR, SERVICES
from services.cli.natsserver import with_credentials
from services.cli.procs import StackError, cmdline_of, port_free, stop_process
from services.cli.secrets import LocalSecrets
from services.cli.stack import DataPaths, local_dsns, repo_root, write_state

START_GROUPS = (("membership", "payments"), ("orders", "analytics"))
HTTP_OFFSET = {"orders": 0, "payments": 1, "membership": 2, "analytics": 3}
GRPC_SERVICES = ("payments", "membership")
# Variables a child needs from our environment; everything else (DATABASE_URL, ...) stays out.
PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH")
STOP_TIMEOUT = 10.0


class ServiceFailed(RuntimeError):
    """A service could not start or died; the message names it and its log."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during start-up."""


@dataclass(frozen=True)
class Ports:
    http: Mapping[str, int]
    grpc: Mapping[str, int]

    @classmethod
    def local(cls, port_base: int = 8000, grpc_base: int | None = None) -> Ports:
        """HTTP from `port_base`; gRPC from 50052, moved as far as the HTTP ports were, so
        that two stacks on one machine (`--port-base`) do not collide."""
        if grpc_base is None:
            grpc_base = 50052 + port_base - 8000
        return cls(
            http={name: port_base + offset for name, offset in HTTP_OFFSET.items()},
            grpc={name: grpc_base + i for i, name in enumerate(GRPC_SERVICES)},
        )


def service_env(
    name: str,
    *,
    dsns: Mapping[str, str],
    nats_url: str,
    ports: Ports,
    secrets: LocalSecrets,
    key_file: Path,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of `python -m services.<name>` (base: os.environ).

    The service's own settings (`ORDERS_MAX_CHECKOUTS_IN_FLIGHT=10 make run`) come
    through too, except those the launcher sets: where it listens and what it connects to.
    """
    base = os.environ if base_env is None else base_env
    own = f"{name.upper()}_"
    env = {k: v for k, v in base.items()
           if k in PASSTHROUGH or k.startswith("OTEL_") or k.startswith(own)}
    # One OTEL_SERVICE_NAME for four processes would merge their traces; name each.
    env |= {"PYTHONUNBUFFERED": "1", "OTEL_SERVICE_NAME": name}
    x = name.upper()
    env |= {
        f"{x}_DATABASE_URL": dsns[name],
        f"{x}_NATS_URL": service_nats_url(name, nats_url, secrets),
        f"{x}_HTTP_PORT": str(ports.http[name]),
        f"{x}_INTERNAL_AUTH_SECRET": secrets.internal_auth_secret,
        f"{x}_ENVIRONMENT": "local",
        f"{x}_ADMIN_API_KEY": secrets.admin_api_key,
    }
    if name in ports.grpc:
        env[f"{x}_GRPC_PORT"] = str(ports.grpc[name])
    if name == "membership":
        env["MEMBERSHIP_JWT_PRIVATE_KEY_FILE"] = str(key_file)
    else:
        jwks = f"http://127.0.0.1:{ports.http['membership']}/.well-known/jwks.json"
        env[f"{x}_JWKS_URL"] = jwks
    if name == "orders":
        env["ORDERS_PAYMENTS_TARGET"] = f"127.0.0.1:{ports.grpc['payments']}"
        env["ORDERS_MEMBERSHIP_TARGET"] = f"127.0.0.1:{ports.grpc['membership']}"
    return env


def service_nats_url(name: str, nats_url: str, secrets: LocalSecrets) -> str:
    """The service's NATS URL, logged in as its own user when the server has users."""
    password = secrets.nats_passwords.get(name)
    return with_credentials(nats_url, name, password) if password else nats_url


@dataclass
class Child:
    """One process of a service (a service may run several); `respawn` starts it again."""

    name: str  # the service: `python -m services.<name>`
    proc: subprocess.Popen[bytes]
    log_file: Path
    log_start: int = 0  # where this run's output begins in the (appended) log
    env: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # this process among its service's: stack.json's key (default: name)
    started_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def http_port(self) -> int:
        return int(self.env[f"{self.name.upper()}_HTTP_PORT"])

    def respawn(self) -> None:
        """Start the process again, as before (same environment, same log file)."""
        self.proc, self.log_start = _popen(self.name, self.env, self.log_file)
        self.started_at = time.monotonic()

    def failure(self, what: str) -> ServiceFailed:
        with self.log_file.open("rb") as log:
            log.seek(self.log_start)
            lines = log.read().decode(errors="replace").splitlines()[-30:]
        return ServiceFailed(
            f"{self.label} {what}; last lines of {self.log_file}:\n" + "\n".join(lines)
        )


def check_runnable(name: str) -> None:
    """Fail early, and clearly, when a service package has no __main__ yet."""
    try:
        found = importlib.util.find_spec(f"services.{name}.__main__") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ServiceFailed(
            f"cannot start {name}: services/{name}/__main__.py does not exist yet "
            f"(`python -m services.{name}` is how it runs); write it or pull the branch that has it"
        )


def check_ports_free(ports: Ports) -> None:
    for kind, table in (("HTTP", ports.http), ("gRPC", ports.grpc)):
        for name, port in table.items():
            if not port_free(port):
                raise StackError(
                    f"{kind} port {port} for {name} is in use (another `marketplace up`?); "
                    "stop what listens there, or pass --port-base (HTTP) to use other ports"
                )


def spawn(name: str, env: Mapping[str, str], log_dir: Path, *, label: str = "") -> Child:
    """Start `python -m services.<name>`, its output appended to <log_dir>/<label>.log."""
    log_file = log_dir / f"{label or name}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    proc, log_start = _popen(name, env, log_file)
    return Child(name, proc, log_file, log_start, env=dict(env), label=label)


def _popen(
    name: str, env: Mapping[str, str], log_file: Path
) -> tuple[subprocess.Popen[bytes], int]:
    with log_file.open("ab") as out:
        log_start = out.tell()
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        out.flush()
        # Own session: Ctrl-C reaches the launcher only, which stops children in order.
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=dict(env),
            cwd=repo_root(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log_start


async def wait_ready(child: Child, port: int, stop: asyncio.Event, *, within: float = 90.0) -> None:
    """Poll /healthz then /readyz until 200; fail fast if the child exits."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        for path in ("/healthz", "/readyz"):
            url, last = f"http://127.0.0.1:{port}{path}", "no answer"
            deadline = time.monotonic() + within
            while True:
                if child.proc.poll() is not None:
                    raise child.failure(f"exited with code {child.proc.returncode} at start-up")
                if stop.is_set():
                    raise Interrupted
                try:
                    answer = await client.get(url)
                    if answer.status_code == 200:
                        break
                    last = f"{answer.status_code} {answer.text[:300]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise child.failure(f"not ready: GET {url} failed for {within:.0f}s ({last})")
                await asyncio.sleep(0.25)


def stop_children(children: list[Child]) -> None:
    """SIGTERM in reverse start order, group by group; SIGKILL after STOP_TIMEOUT."""
    for group in reversed(START_GROUPS):
        members = [c for c in children if c.name in group and c.proc.poll() is None]
        for child in members:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in members:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                child.proc.kill()
                child.proc.wait()


def record_children(paths: DataPaths, children: Sequence[Child]) -> None:
    """stack.json's `services`: each child's current pid (`stack stop` ends them)."""
    write_state(paths, services={c.label: c.proc.pid for c in children})


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """One progress line per step: the label, then ok/failed and the elapsed time."""
    print(f"  {label:<36}", end="", flush=True)
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        outcome = "stopped" if isinstance(exc, Interrupted) else "failed"
        print(f"{outcome:<8}{time.monotonic() - started:5.1f}s", flush=True)
        raise
    print(f"ok      {time.monotonic() - started:5.1f}s", flush=True)


async def seed_if_empty(dsns: Mapping[str, str], *, membership_url: str) -> str:
    """Seed the catalog and the demo members when the catalog is empty."""
    from seeds.seed import seed_if_empty as seed  # heavy: only `up` needs it

    seeded = await seed(dict(dsns), membership_url=membership_url, progress=True)
    return "seeded the catalog and demo members" if seeded else "catalog already has data"


def local_auditor_dsn(paths: DataPaths | None = None) -> str:
    """The read-only auditor's DSN on the local stack (for `marketplace audit`)."""
    return local_dsns(paths)[AUDITOR]


def launcher_running(paths: DataPaths, state: Mapping[str, object]) -> int | None:
    """The pid of another live `marketplace up` recorded in stack.json, if any."""
    launcher = state.get("launcher")
    pid = launcher.get("pid") if isinstance(launcher, dict) else None
    cmd = cmdline_of(pid) if pid != os.getpid() else []
    is_up = any(part.endswith("marketplace") or "services.cli" in part for part in cmd)
    return pid if is_up and "up" in cmd else None


def stop_launcher(paths: DataPaths, state: Mapping[str, object]) -> list[str]:
    """For `stack stop`: end a running `up` (it stops its services) and any leftover service."""
    stopped = []
    pid = launcher_running(paths, state)
    if pid is not None:
        stop_process(pid, timeout=4 * STOP_TIMEOUT)
        stopped.append(f"marketplace up (pid {pid})")
    services = state.get("services")
    for label, pid in services.items() if isinstance(services, dict) else []:
        command = cmdline_of(pid)
        if any(f"services.{name}" in command for name in SERVICES):  # still ours
            stop_process(pid, timeout=STOP_TIMEOUT)
            stopped.append(label)
    write_state(paths, launcher=None, services={})
    return stopped
