"""Small factories for test data, driven through the public APIs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "Correct-Horse-9battery"


@dataclass(frozen=True)
class SignedIn:
    id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


async def member(
    http: httpx.AsyncClient, membership_url: str, **overrides: Any
) -> SignedIn:
    """Register a new member and sign in."""
    body = {
        "email": f"m-{uuid.uuid4().hex[:12]}@example.com",
        "password": PASSWORD,
        "name": "Test Member",
        "birth_year": 1990,
        "region": "CN-SH",
        "gender": "female",
    } | overrides
    created = await http.post(f"{membership_url}/v1/members", json=body)
    assert created.status_code == 201, created.text
    token = await http.post(
        f"{membership_url}/v1/auth/token",
        json={"email": body["email"], "password": body["password"]},
    )
    assert token.status_code == 200, token.text
    return SignedIn(created.json()["id"], body["email"], token.json()["access_token"])


async def sku_in_stock(
    http: httpx.AsyncClient, orders_url: str, *, min_stock: int = 1, max_price: int | None = None
) -> dict[str, Any]:
    """A SKU from the catalog with at least `min_stock` units (walks the pages)."""
    cursor = None
    while True:
        params: dict[str, Any] = {"in_stock": "true", "limit": 100}
        if max_price is not None:
            params["max_price"] = max_price
        if cursor:
            params["cursor"] = cursor
        page = await http.get(f"{orders_url}/v1/products", params=params)
        assert page.status_code == 200, page.text
        for product in page.json()["items"]:
            for sku in product["skus"]:
                if sku["stock_available"] >= min_stock and (
                    max_price is None or sku["price"]["amount"] <= max_price
                ):
                    return sku | {"product_id": product["id"]}
        cursor = page.json().get("next_cursor")
        assert cursor, "no SKU in the catalog fits"


def order_body(
    sku_id: str, quantity: int = 1, token: str = "tok_visa", **extra: Any
) -> dict[str, Any]:
    items = [{"sku_id": sku_id, "quantity": quantity}]
    return {"items": items, "payment": {"token": token}} | extra


def idem() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}
