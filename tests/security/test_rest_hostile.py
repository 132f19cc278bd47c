"""REST: BOLA, mass assignment, size limits, security headers, overload — real processes."""

from __future__ import annotations

import asyncio

import httpx

from tests import factories
from tests.faults.harness import Catalog, ServiceStack


async def placed_order(
    http: httpx.AsyncClient, stack: ServiceStack, buyer: factories.SignedIn, catalog: Catalog,
    **extra: object,
) -> httpx.Response:  # fmt: skip
    return await http.post(
        f"{stack.url('orders')}/v1/orders",
        json=factories.order_body(catalog.sku_id, **extra),
        headers=buyer.auth | factories.idem(),
    )


async def test_bola_another_members_order_and_payment_are_not_found(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog
) -> None:
    alice = await factories.member(http, stack.url("membership"))
    bob = await factories.member(http, stack.url("membership"))
    order = (await placed_order(http, stack, alice, catalog)).json()
    orders, payments = stack.url("orders"), stack.url("payments")

    own = await http.get(f"{orders}/v1/orders/{order['id']}", headers=alice.auth)
    assert own.status_code == 200
    for method, url in [
        ("GET", f"{orders}/v1/orders/{order['id']}"),
        ("POST", f"{orders}/v1/orders/{order['id']}/cancel"),
        ("GET", f"{payments}/v1/payments/{order['payment_id']}"),
    ]:
        answer = await http.request(method, url, headers=bob.auth)
        assert answer.status_code == 404, (url, answer.text)
        assert answer.json()["type"].endswith("/not-found")
    listed = (await http.get(f"{orders}/v1/orders", headers=bob.auth)).json()
    assert order["id"] not in [o["id"] for o in listed["items"]]
    me = (await http.get(f"{stack.url('membership')}/v1/members/me", headers=bob.auth)).json()
    assert me["id"] == bob.id  # a profile is only ever one's own
    still = (await http.get(f"{orders}/v1/orders/{order['id']}", headers=alice.auth)).json()
    assert still["status"] == "CONFIRMED"


async def test_bola_a_cart_is_only_ever_ones_own(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog
) -> None:
    """The cart has no id to guess: every cart call acts on the signed-in member's cart only,
    so A can neither read nor empty B's cart, nor check out from it."""
    alice = await factories.member(http, stack.url("membership"))
    bob = await factories.member(http, stack.url("membership"))
    cart = f"{stack.url('orders')}/v1/cart/items"
    put = await http.put(cart, json={"sku_id": catalog.sku_id, "quantity": 2}, headers=bob.auth)
    assert put.status_code in (200, 201, 204), put.text

    seen_by_alice = await http.get(cart, headers=alice.auth)
    assert seen_by_alice.json()["items"] == []
    emptied = await http.delete(cart, params={"sku_id": catalog.sku_id}, headers=alice.auth)
    assert emptied.status_code < 500, emptied.text
    from_cart = {"from_cart": True, "payment": {"token": "tok_visa"}}
    checkout = await http.post(
        f"{stack.url('orders')}/v1/orders", json=from_cart, headers=alice.auth | factories.idem()
    )
    assert checkout.status_code == 422, checkout.text  # alice's own cart is empty

    bobs = (await http.get(cart, headers=bob.auth)).json()["items"]
    assert [(i["sku_id"], i["quantity"]) for i in bobs] == [(catalog.sku_id, 2)]
    assert (await http.get(cart)).status_code == 401  # and nobody's cart without a token


async def test_mass_assignment_changes_nothing(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog
) -> None:
    alice = await factories.member(http, stack.url("membership"))
    bob = await factories.member(http, stack.url("membership"))
    answer = await placed_order(
        http, stack, alice, catalog, status="CONFIRMED", member_id=bob.id,
        total={"amount": 1, "currency": "CNY"}, unit_price={"amount": 1, "currency": "CNY"},
        tier="PLATINUM", discount={"amount": 999999, "currency": "CNY"},
    )  # fmt: skip
    if answer.status_code == 201:
        order = answer.json()
        assert order["member_id"] == alice.id
        assert order["total"]["amount"] == catalog.price
    else:  # refusing unknown fields outright is as good
        assert answer.status_code == 422, answer.text
    registered = await http.post(f"{stack.url('membership')}/v1/members", json={
        "email": f"x-{alice.id[:8]}@example.com", "password": factories.PASSWORD,
        "name": "Eve", "birth_year": 1990, "region": "CN-SH",
        "tier": "PLATINUM", "points_balance": 10**9, "id": bob.id,
    })  # fmt: skip
    if registered.status_code == 201:
        body = registered.json()
        assert (body["tier"], body["points_balance"]) == ("BRONZE", 0)
        assert body["id"] != bob.id
    else:
        assert registered.status_code == 422, registered.text


async def test_size_limits_on_bodies_arrays_and_pages(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog
) -> None:
    alice = await factories.member(http, stack.url("membership"))
    orders = stack.url("orders")
    huge = await http.post(
        f"{orders}/v1/orders", content=b"{" + b" " * (2 << 20) + b"}",
        headers=alice.auth | factories.idem() | {"content-type": "application/json"},
    )  # fmt: skip
    assert huge.status_code == 413, huge.status_code
    many = {"items": [{"sku_id": catalog.sku_id, "quantity": 1}] * 1000,
            "payment": {"token": "tok_visa"}}  # fmt: skip
    too_many = await http.post(
        f"{orders}/v1/orders", json=many, headers=alice.auth | factories.idem()
    )
    assert too_many.status_code == 422, too_many.text
    page = await http.get(f"{orders}/v1/products", params={"limit": 100_000})
    assert page.status_code == 422, page.text


async def test_security_headers_on_every_answer(stack: ServiceStack, http: httpx.AsyncClient):
    for name in ("orders", "payments", "membership", "analytics"):
        for path in ("/healthz", "/v1/does-not-exist"):
            answer = await http.get(f"{stack.url(name)}{path}")
            assert answer.headers["x-content-type-options"] == "nosniff", (name, path)
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["cache-control"] == "no-store"


async def test_overload_sheds_with_503_and_retry_after(
    stack: ServiceStack, catalog: Catalog
) -> None:
    """analytics restarted with MAX_IN_FLIGHT=1: a crowd gets 503 + Retry-After, not a queue."""
    await stack.restart("analytics", ANALYTICS_MAX_IN_FLIGHT="1")
    try:
        url = f"{stack.url('analytics')}/v1/analytics/gmv"
        headers = {"x-admin-key": stack.admin_key}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as c:
            answers = await asyncio.gather(*(c.get(url, headers=headers) for _ in range(64)))
        shed = [a for a in answers if a.status_code == 503]
        assert shed and all(a.status_code in (200, 503) for a in answers)
        assert shed[0].headers["retry-after"].isdigit()
        assert shed[0].json()["type"].endswith("/overloaded")
    finally:
        await stack.restart("analytics")


async def test_per_client_rate_limit_answers_429(stack: ServiceStack, http: httpx.AsyncClient):
    url = f"{stack.url('membership')}/v1/auth/token"
    body = {"email": "nobody@example.com", "password": "wrong-password-123"}
    statuses = [(await http.post(url, json=body)).status_code for _ in range(40)]
    assert 429 in statuses, statuses
    limited = await http.post(url, json=body)
    assert limited.status_code == 429 and "retry-after" in limited.headers
