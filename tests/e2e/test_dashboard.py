"""The big screen in a real headless Chromium: its GMV grows while orders come in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests import factories
from tests.e2e.conftest import SINGLE_ONLY, Stack
from tests.helpers import eventually

pytestmark = SINGLE_ONLY

CHROMIUM = "/usr/bin/chromium"
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def shown_gmv(page: Page) -> int:
    amount = await page.get_attribute("#gmv", "data-amount")
    return int(amount) if amount else -1


async def place_order(http: httpx.AsyncClient, stack: Stack, buyer: factories.SignedIn) -> int:
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=1)
    placed = await http.post(
        f"{stack.url('orders')}/v1/orders", json=factories.order_body(sku["id"], quantity=1),
        headers=buyer.auth | factories.idem(),
    )
    assert placed.status_code == 201, placed.text
    total: int = placed.json()["total"]["amount"]
    return total


async def test_dashboard_gmv_grows_while_orders_are_placed(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    await page.goto(f"{stack.url('analytics')}/dashboard")
    await page.fill("#key", stack.admin_key)
    await page.click("button[type=submit]")
    start = await eventually(lambda: shown_gmv(page), until=lambda g: g >= 0,
                             what="the dashboard's first snapshot")
    buyer = await factories.member(http, stack.url("membership"))
    seen = [start]
    for _ in range(3):
        total = await place_order(http, stack, buyer)
        floor = seen[-1] + total
        seen.append(await eventually(
            lambda: shown_gmv(page), until=lambda g, floor=floor: g >= floor, timeout_s=30,
            what=f"dashboard GMV >= {floor}",
        ))

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACT), full_page=True)
    assert seen == sorted(seen) and seen[-1] > seen[0]
    assert (await page.text_content("#status")) == "live"
    assert await page.locator("#login").is_hidden()
    assert await page.locator("#chart rect").count() == 30
    assert await page.locator("#top li").count() >= 1
    assert not problems
    # No CDN, font or script from elsewhere: everything came from the service.
    assert requested and all(u.startswith(stack.url("analytics")) for u in requested)


async def test_the_stream_needs_the_admin_key(stack: Stack, http: httpx.AsyncClient) -> None:
    url = f"{stack.url('analytics')}/v1/analytics/stream"
    for params in ({}, {"key": "wrong-key-0123456789"}):
        refused = await http.get(url, params=params)
        assert refused.status_code == 401, refused.text
    async with http.stream("GET", url, params={"key": stack.admin_key}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                assert '"gmv":' in line
                break
