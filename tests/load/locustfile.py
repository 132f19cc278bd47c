"""Storefront traffic for the peak day: `make load` runs it (see docs/benchmarks.md).

Shoppers browse and search (most traffic), view products, add to the cart, check out
with the simulated card (mostly tok_visa, some tok_chargeDeclined) and look at their
orders; a flash-sale crowd goes for the hot SKUs. Every member signed in with a real
token before the run: LOAD_FIXTURE names the JSON that `python -m bench.load` wrote
(members, SKUs, hot SKUs, products, search words). The shape is PeakDayShape below:
LOAD_USERS (base users), LOAD_PEAK_FACTOR, LOAD_DAY_S (the compressed day in seconds).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment

from tests.load.shape import PeakDay

DECLINE_SHARE = 0.1
_fixture: dict[str, Any] = {}
_next_member = itertools.count()
_cart_missing = {"count": 0}


@events.init.add_listener
def _load_fixture(environment: Environment, **_: Any) -> None:
    path = os.environ.get("LOAD_FIXTURE")
    if not path:
        raise SystemExit("LOAD_FIXTURE is not set: run `make load` (python -m bench.load), "
                         "which signs the members in and writes it")
    with open(path) as f:
        _fixture.update(json.load(f))


@events.quitting.add_listener
def _report_cart(environment: Environment, **_: Any) -> None:
    if _cart_missing["count"]:
        print(f"note: PUT /v1/cart/items answered 404/405 {_cart_missing['count']} times "
              "(no cart endpoint yet); add-to-cart was skipped, not counted as a failure")


def _order_body(sku: str, token: str) -> dict[str, Any]:
    return {"items": [{"sku_id": sku, "quantity": 1}], "payment": {"token": token}}


class _Member(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        members = _fixture["members"]
        member = members[next(_next_member) % len(members)]
        self.auth = {"Authorization": f"Bearer {member['token']}"}

    def checkout(self, sku: str, name: str) -> None:
        card = "tok_chargeDeclined" if random.random() < DECLINE_SHARE else "tok_visa"
        headers = self.auth | {"Idempotency-Key": str(uuid.uuid4())}
        with self.client.post("/v1/orders", json=_order_body(sku, card), headers=headers,
                              name=name, catch_response=True) as response:
            # Declined (402) and sold out (409) are correct answers on a peak day.
            if response.status_code in (201, 202, 402, 409):
                response.success()


class Shopper(_Member):
    """An ordinary shopper: mostly browsing, sometimes buying."""

    weight = 8
    wait_time = between(1, 3)

    @task(30)
    def browse(self) -> None:
        params = {"limit": 20, "in_stock": random.choice(["true", "false"])}
        page = self.client.get("/v1/products", params=params, name="/v1/products [browse]")
        cursor = page.json().get("next_cursor") if page.status_code == 200 else None
        if cursor and random.random() < 0.3:
            self.client.get("/v1/products", params=params | {"cursor": cursor},
                            name="/v1/products [next page]")

    @task(20)
    def search(self) -> None:
        self.client.get("/v1/products", params={"q": random.choice(_fixture["words"]),
                                                "limit": 20}, name="/v1/products [search]")

    @task(15)
    def view_product(self) -> None:
        product = random.choice(_fixture["products"])
        self.client.get(f"/v1/products/{product}", name="/v1/products/{id}")

    @task(8)
    def add_to_cart(self) -> None:
        body = {"sku_id": random.choice(_fixture["skus"]), "quantity": 1}
        with self.client.put("/v1/cart/items", json=body, headers=self.auth,
                             name="/v1/cart/items", catch_response=True) as response:
            if response.status_code in (404, 405):
                _cart_missing["count"] += 1
                response.success()

    @task(6)
    def my_orders(self) -> None:
        self.client.get("/v1/orders", params={"limit": 10}, headers=self.auth,
                        name="/v1/orders [history]")

    @task(5)
    def buy(self) -> None:
        self.checkout(random.choice(_fixture["skus"]), "/v1/orders [checkout]")


class FlashSaleCrowd(_Member):
    """At midnight they refresh the hot product and buy it the moment they can."""

    weight = 2
    wait_time = between(0.3, 1.5)

    @task(3)
    def grab(self) -> None:
        hot = _fixture["hot_skus"] or _fixture["skus"]
        self.checkout(random.choice(hot), "/v1/orders [flash sale]")

    @task(1)
    def refresh(self) -> None:
        product = random.choice(_fixture["hot_products"] or _fixture["products"])
        self.client.get(f"/v1/products/{product}", name="/v1/products/{id} [hot]")


class PeakDayShape(LoadTestShape):
    """Calm evening, ten times the users within seconds at midnight, plateau, slow decay."""

    day = PeakDay(
        base_users=int(os.environ.get("LOAD_USERS", "10")),
        peak_factor=float(os.environ.get("LOAD_PEAK_FACTOR", "10")),
        day_s=float(os.environ.get("LOAD_DAY_S", "180")),
    )

    def tick(self) -> tuple[int, float] | None:
        return self.day.tick(self.get_run_time())
