"""Find the local stack, or start it (`marketplace up` in the background, in any of its
shapes) for one run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.cli.launcher import HTTP_OFFSET, Ports, launcher_running
from services.cli.stack import DataPaths, read_state, repo_root
from services.cli.topology import Layout

READY_WITHIN_S = 240.0
RUNNING_LINE = b"marketplace is running"  # printed by `marketplace up` once seeded


@dataclass(frozen=True)
class Target:
    """Where the running services answer, and what a report needs from the stack."""

    port_base: int
    admin_key: str
    data: DataPaths

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port_base + HTTP_OFFSET[service]}"

    def pid(self, service: str) -> int | None:
        pids = read_state(self.data).get("services") or {}
        pid = pids.get(service)
        return int(pid) if pid else None

    def replica_urls(self, service: str) -> list[str]:
        """Each process of `service` itself (behind the balancer when there are replicas):
        a metric must be summed over them, the balancer answers from one at a time."""
        replicas = int((read_state(self.data).get("topology") or {}).get("replicas") or 1)
        layout = Layout.local(Ports.local(self.port_base), replicas)
        return [f"http://127.0.0.1:{inst.ports.http[service]}"
                for inst in layout.instances(service)]

    @property
    def admin_dsn(self) -> str:
        return str(read_state(self.data)["admin_dsn"])

    @property
    def nats_url(self) -> str:
        state = read_state(self.data)
        # The embedded NATS has one user per service; the bench uses the admin login.
        return str(state.get("admin_nats_url") or state["nats_url"])


def all_ready(target_base: int) -> bool:
    """True when every service answers /readyz with 200."""
    try:
        with httpx.Client(timeout=2.0) as client:
            return all(
                client.get(f"http://127.0.0.1:{target_base + off}/readyz").status_code == 200
                for off in HTTP_OFFSET.values()
            )
    except httpx.HTTPError:
        return False


def _admin_key(data: DataPaths) -> str:
    return str(json.loads(data.secrets_file.read_text())["admin_api_key"])


def code_at(ref: str) -> Path:
    """A checkout of commit `ref` (a git worktree under .data/bench-code/) whose stack runs
    on this checkout's .venv: the code of an earlier commit, measured beside this one's."""
    root = repo_root()
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=root,
                         capture_output=True, text=True, check=False)
    if sha.returncode != 0:
        raise SystemExit(f"{ref!r} is not a commit of this repository: {sha.stderr.strip()}")
    tree = root / ".data" / "bench-code" / sha.stdout.strip()[:12]
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha.stdout.strip()],
                       cwd=root, check=True, capture_output=True)
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(root / ".venv")
    return tree


@contextlib.contextmanager
def ensure_stack(port_base: int, *, log_name: str = "bench-up",
                 up_args: Sequence[str] | None = None,
                 code: Path | None = None) -> Iterator[Target]:
    """Use the running `marketplace up`, or start one and stop it again at the end.

    With `up_args` (a shape: `()` for the single-process stack, `--replicas 2 ...`) the run
    must know what it measures: it always starts its own `marketplace up` with them.
    With `code` (`code_at(ref)`) that stack runs another commit's code, its data in that
    checkout's .data."""
    data = DataPaths(code / ".data") if code is not None else DataPaths.default()
    ours = launcher_running(data, read_state(data)) is not None
    if ours and up_args is not None:
        raise SystemExit("--shapes starts each shape itself: stop the running `marketplace up` "
                         "first (Ctrl-C in its terminal or `marketplace stack stop`)")
    if ours and all_ready(port_base):
        print(f"using the running stack (services at port base {port_base})")
        yield Target(port_base, _admin_key(data), data)
        return
    if ours:
        raise SystemExit(f"`marketplace up` is running but its services do not answer at port "
                         f"base {port_base}; set PORT_BASE to the one it uses")
    proc = _start_up(data, port_base, log_name, tuple(up_args or ()), code=code)
    try:
        yield Target(port_base, _admin_key(data), data)
    finally:
        _stop_up(proc)


def _start_up(data: DataPaths, port_base: int, log_name: str,
              up_args: tuple[str, ...], *, code: Path | None = None) -> subprocess.Popen[bytes]:
    data.logs.mkdir(parents=True, exist_ok=True)
    log_file: Path = data.logs / f"{log_name}.log"
    shown = " ".join(("--port-base", str(port_base), *up_args))
    print(f"starting the stack: marketplace up {shown} (log: {log_file})")
    root = code or repo_root()
    env = dict(os.environ)
    if code is not None:  # its services import its own code first, not this checkout's
        env |= {"PYTHONPATH": str(code), "MARKETPLACE_DATA_DIR": str(data.root)}
    with log_file.open("ab") as out:
        start = out.tell()  # the log is appended to: only this run's lines count
        proc = subprocess.Popen(
            [str(root / ".venv" / "bin" / "python"), "-m", "services.cli", "up",
             "--port-base", str(port_base), *up_args],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    deadline = time.monotonic() + READY_WITHIN_S
    # The services answer /readyz before the launcher has seeded a fresh catalog: wait for
    # the line it prints once everything, the seed included, is done.
    while not (_says_running(log_file, start) and all_ready(port_base)):
        if proc.poll() is not None:
            raise SystemExit(f"marketplace up exited with {proc.returncode}; see {log_file}")
        if time.monotonic() > deadline:
            _stop_up(proc)
            raise SystemExit(f"the stack was not ready within {READY_WITHIN_S:.0f}s; "
                             f"see {log_file}")
        time.sleep(1.0)
    print("stack ready")
    return proc


def _says_running(log_file: Path, start: int) -> bool:
    with log_file.open("rb") as log:
        log.seek(start)
        return RUNNING_LINE in log.read()


def _stop_up(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for the launcher we started: it stops its services and the stack it started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print("stopped the stack this run started")
