"""What a run needs before it starts: signed-in members and the SKUs they will buy."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "Load-Shopper-2015"
# Membership allows 100 sign-ins per client address per 5 minutes; storefront traffic comes
# from many addresses, so each block of members signs in from its own loopback address, in
# a /24 of 127.0.0.0/8 drawn afresh for each run: runs minutes apart do not share a limit.
PER_ADDRESS = 40
_REGIONS = ("CN-BJ", "CN-SH", "CN-GD", "CN-ZJ", "CN-SC", "CN-JS")


@dataclass(frozen=True)
class Shopper:
    email: str
    token: str


@dataclass
class Catalog:
    skus: list[str] = field(default_factory=list)  # in stock, not hot
    hot_skus: list[str] = field(default_factory=list)
    hot_products: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # title words, for search


def _member_body(prefix: str, n: int) -> dict[str, Any]:
    return {"email": f"{prefix}-{n:04d}@example.com", "password": PASSWORD,
            "name": f"Load Shopper {n}", "birth_year": 1960 + n % 45,
            "region": _REGIONS[n % len(_REGIONS)]}


def source_block(rng: random.Random | None = None) -> str:
    """A loopback /24 other than 127.0.0.0/24 (where the services and their peers are)."""
    rng = rng or random.Random()
    return f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}"


async def _shopper(membership_url: str, prefix: str, n: int, block: str) -> Shopper:
    body = _member_body(prefix, n)
    address = f"{block}.{10 + n // PER_ADDRESS}"
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=membership_url, transport=transport,
                                 timeout=30.0) as client:
        created = await client.post("/v1/members", json=body)
        if created.status_code not in (201, 409):  # 409: registered by an earlier run
            raise RuntimeError(f"cannot register {body['email']}: {created.status_code} "
                               f"{created.text[:200]}")
        signed = await client.post("/v1/auth/token",
                                   json={"email": body["email"], "password": PASSWORD})
        if signed.status_code != 200:
            raise RuntimeError(f"cannot sign in {body['email']} from {address}: "
                               f"{signed.status_code} {signed.text[:200]}")
        return Shopper(body["email"], signed.json()["access_token"])


async def sign_in(membership_url: str, count: int, *, prefix: str = "load") -> list[Shopper]:
    """Register (once) and sign in `count` members, a few at a time."""
    gate = asyncio.Semaphore(8)
    block = source_block()

    async def one(n: int) -> Shopper:
        async with gate:
            return await _shopper(membership_url, prefix, n, block)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def catalog(orders_url: str, *, min_stock: int = 20, max_pages: int = 30) -> Catalog:
    """Walk the catalog newest first: SKUs with stock to sell, the hot ones apart."""
    found = Catalog()
    words: set[str] = set()
    async with httpx.AsyncClient(base_url=orders_url, timeout=30.0) as client:
        cursor: str | None = None
        for _ in range(max_pages):
            params: dict[str, Any] = {"limit": 100, "in_stock": "true"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/products", params=params)).raise_for_status().json()
            for product in page["items"]:
                found.products.append(product["id"])
                if product.get("hot"):
                    found.hot_products.append(product["id"])
                words.update(w.lower() for w in product["title"].split()[1:] if len(w) > 3)
                for sku in product["skus"]:
                    if product.get("hot") and sku["stock_available"] > 0:
                        found.hot_skus.append(sku["id"])
                    elif sku["stock_available"] >= min_stock:
                        found.skus.append(sku["id"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    found.words = sorted(words)
    random.Random(11).shuffle(found.skus)
    return found
