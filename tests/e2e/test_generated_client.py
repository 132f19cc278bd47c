"""Clients generated from each service's live OpenAPI document, used as a storefront would.

`openapi-python-client` (offline: it reads the document from a file) must build a client
from every service without a warning; with those clients a new member registers, signs
in, checks out a SKU of the catalog, sees a declined card come back as the documented
402 problem with its order, reads the payment, and an admin reads GMV.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests import factories
from tests.e2e.conftest import SERVICES, SINGLE_ONLY, Stack

pytestmark = SINGLE_ONLY
# No formatting hooks: generation needs nothing but the document.
CONFIG = "post_hooks: []\n"


def _generate(document: Path, package: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
         "--output-path", str(package), "--meta", "none", "--config", str(config),
         "--fail-on-warning"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


class Clients:
    """The generated packages, importable as `<service>_client`."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def module(self, service: str, name: str) -> ModuleType:
        return importlib.import_module(f"{service}_client.{name}")

    def client(self, service: str, token: str | None = None) -> Any:
        package = self.module(service, "client")
        if token is None:
            return package.Client(base_url=self.stack.url(service))
        return package.AuthenticatedClient(base_url=self.stack.url(service), token=token)


@pytest.fixture(scope="module")
def clients(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    root = tmp_path_factory.mktemp("generated-clients")
    config = root / "config.yaml"
    config.write_text(CONFIG)
    for service in SERVICES:
        document = root / f"{service}.json"
        document.write_bytes(httpx.get(f"{stack.url(service)}/openapi.json").content)
        done = _generate(document, root / f"{service}_client", config)
        assert done.returncode == 0, f"{service}: {done.stdout}\n{done.stderr}"
    sys.path.insert(0, str(root))
    try:
        yield Clients(stack)
    finally:
        sys.path.remove(str(root))
        packages = {f"{service}_client" for service in SERVICES}
        for name in [m for m in sys.modules if m.split(".")[0] in packages]:
            del sys.modules[name]


async def test_a_generated_client_registers_signs_in_and_places_an_order(
    stack: Stack, clients: Clients
) -> None:
    m = clients.module
    email = f"sdk-{uuid.uuid4().hex[:12]}@example.com"
    async with clients.client("membership") as anonymous:
        registered = await m("membership", "api.members.register_member").asyncio_detailed(
            client=anonymous, body=m("membership", "models").RegisterRequest(
                email=email, password=factories.PASSWORD, name="SDK Shopper",
                birth_year=1990, region="CN-SH"))
        assert registered.status_code == 201, registered.content
        tokens = await m("membership", "api.auth.issue_token").asyncio(
            client=anonymous, body=m("membership", "models").TokenRequest(
                email=email, password=factories.PASSWORD))
    assert isinstance(tokens, m("membership", "models").TokenResponse), tokens
    member = registered.parsed

    place = m("orders", "api.orders.place_order")
    # The SDK cannot send a checkout without a key: it is a required argument.
    key = inspect.signature(place.asyncio_detailed).parameters["idempotency_key"]
    assert key.default is inspect.Parameter.empty
    models = m("orders", "models")
    async with clients.client("orders", tokens.access_token) as orders:
        page = await m("orders", "api.catalog.list_products").asyncio(
            client=orders, in_stock=True, limit=50)
        sku = next(s for p in page.items for s in p.skus if s.stock_available >= 2)

        def checkout(card: str) -> Any:
            return place.asyncio_detailed(
                client=orders, idempotency_key=str(uuid.uuid4()), body=models.PlaceOrderIn(
                    items=[models.OrderItemIn(sku_id=sku.id, quantity=1)],
                    payment=models.PaymentIn(token=card)))

        paid, declined = await checkout("tok_visa"), await checkout("tok_chargeDeclined")
        again = await m("orders", "api.orders.get_order").asyncio(
            client=orders, order_id=paid.parsed.id)

    assert paid.status_code == 201, paid.content
    order = paid.parsed
    assert isinstance(order, models.Order)
    assert (order.status, order.member_id) == ("CONFIRMED", member.id)
    assert order.total.amount == sku.price.amount  # a new member: BRONZE, no discount
    assert again == order
    assert declined.status_code == 402, declined.content
    problem = declined.parsed
    assert isinstance(problem, models.PlaceOrderResponse402)
    assert problem.type_.endswith("/payment-declined")
    assert problem.order.status == "CANCELLED" and problem.order.id != order.id

    async with clients.client("payments", tokens.access_token) as payments:
        payment = await m("payments", "api.payments.get_payment").asyncio(
            client=payments, payment_id=order.payment_id)
    assert isinstance(payment, m("payments", "models").PaymentOut), payment
    assert (payment.order_id, payment.captured.amount) == (order.id, order.total.amount)

    async with clients.client("analytics") as analytics:
        gmv = await m("analytics", "api.analytics.get_gmv").asyncio_detailed(
            client=analytics, x_admin_key=stack.admin_key)
    assert gmv.status_code == 200, gmv.content
    assert isinstance(gmv.parsed, m("analytics", "models").GmvOut)


async def test_a_generated_client_gets_problems_as_typed_problems(
    stack: Stack, clients: Clients
) -> None:
    """A wrong password and an unknown order come back as the Problem model."""
    m = clients.module
    async with clients.client("membership") as anonymous:
        refused = await m("membership", "api.auth.issue_token").asyncio_detailed(
            client=anonymous, body=m("membership", "models").TokenRequest(
                email="nobody@example.com", password="Not-The-Password-1"))
    assert refused.status_code == 401
    assert isinstance(refused.parsed, m("membership", "models").Problem)
    assert refused.parsed.type_.endswith("/unauthorized")

    async with clients.client("orders") as anonymous_orders:
        unknown = await m("orders", "api.catalog.get_product").asyncio_detailed(
            client=anonymous_orders, product_id=uuid.uuid4())
    assert unknown.status_code == 404
    assert isinstance(unknown.parsed, m("orders", "models").Problem)
    assert unknown.parsed.instance.startswith("/v1/products/")
