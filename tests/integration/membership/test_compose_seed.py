"""docker-compose.yml's one-shot `seed` job, its own command run against a real Postgres and a
real membership service: the shop it leaves is populated, and a second run leaves it as it is.
(No Docker engine here: the job's entrypoint and command are read from the compose file.)"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml

from seeds.seed import DEMO_MEMBERS, DEMO_PASSWORD
from tests.integration.membership.conftest import Running

ROOT = Path(__file__).resolve().parents[3]


async def run_seed_job(orders_dsn: str, membership_url: str) -> tuple[int, str]:
    """The compose `seed` job's entrypoint and command, with its two addresses pointed here."""
    job = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["seed"]
    program, *args = job["entrypoint"] + job["command"]
    assert program == "python"
    env = os.environ | {"SEED_ORDERS_DSN": orders_dsn, "SEED_MEMBERSHIP_URL": membership_url}
    assert set(job["environment"]) == {"SEED_ORDERS_DSN", "SEED_MEMBERSHIP_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    return proc.returncode or 0, output.decode()


async def test_the_compose_seed_job_populates_the_shop_once(membership: Running) -> None:
    orders_dsn = membership.db.dsn("orders")
    url = f"http://127.0.0.1:{membership.settings.http_port}"

    code, output = await run_seed_job(orders_dsn, url)

    assert code == 0, output
    assert "seeded the catalog" in output
    rows = await membership.db.sql(
        "SELECT (SELECT count(*) FROM orders.products) AS products,"
        " (SELECT count(*) FROM orders.skus) AS skus,"
        " (SELECT count(*) FROM membership.members WHERE email LIKE 'demo%@example.com')"
        " AS demo_members")
    assert dict(rows[0]) == {"products": 2_000, "skus": 5_000,
                             "demo_members": DEMO_MEMBERS}
    token = await membership.http.post(
        "/v1/auth/token", json={"email": "demo07@example.com", "password": DEMO_PASSWORD})
    assert token.status_code == 200, token.text

    again, output = await run_seed_job(orders_dsn, url)

    assert again == 0, output
    assert "already has products" in output
    rows = await membership.db.sql(
        "SELECT (SELECT count(*) FROM orders.products) AS products,"
        " (SELECT count(*) FROM membership.members) AS members")
    assert dict(rows[0]) == {"products": 2_000, "members": DEMO_MEMBERS}
