"""Sign-in limits count for the cluster: attempts spread over replicas add up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.infra import FreshDb
from tests.integration.membership.factories import register
from tests.integration.processes import replicas

pytestmark = pytest.mark.topology


async def test_wrong_passwords_on_two_replicas_count_together(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str, tmp_path: Path
) -> None:
    db = await fresh_db("logins")
    # The default limit: 10 attempts per e-mail.
    async with replicas("membership", 2, db=db, nats_url=nats_url, tmp=tmp_path) as (a, b), \
            httpx.AsyncClient(base_url=a.url, timeout=30) as http:
        member = await register(http)
        wrong = {"email": member["email"], "password": "Wrong-password-1"}
        answers = [(await http.post(f"{r.url}/v1/auth/token", json=wrong)).status_code
                   for r in (a, b) * 5]
        refused = [await http.post(f"{r.url}/v1/auth/token", json=wrong) for r in (a, b)]

    assert answers == [401] * 10
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.json()["type"].endswith("/rate-limited") for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
