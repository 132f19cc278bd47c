"""A three-node NATS JetStream cluster on loopback for tests: the production module
(services/cli/natscluster.py) on free ports, in a temp dir the session reaper recognises."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from services.cli.natsauth import Password
from services.cli.natscluster import NatsCluster, NodePorts, start_nats_cluster
from tests.infra import TEMP_PREFIX, free_port

__all__ = ["NatsCluster", "remove_cluster", "start_cluster"]


def start_cluster(
    *, users: Mapping[str, Password] | None = None, timeout: float = 20.0
) -> NatsCluster:
    """Three clustered nodes (with `users`, if given), ready: a JetStream meta leader elected."""
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}nats-cluster-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    ports = [NodePorts(free_port(), free_port(), free_port()) for _ in range(3)]
    try:
        return start_nats_cluster(
            root, ports=ports, users=users, name="marketplace-test", max_file_store="1G",
            timeout=timeout,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def remove_cluster(cluster: NatsCluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
