"""Each service's live OpenAPI document, as client generators read it, and the 400 for a
missing Idempotency-Key that it documents.

Every operation is tagged and summarised, has an `operationId` from the committed set below
(generated SDKs name their functions after it, so a change breaks every client), and
documents every status it can answer; each 4xx/5xx as application/problem+json with the
Problem schema. Schemathesis (test_schemathesis.py) checks that what the services answer
is among what is documented; this checks that the documents say what clients rely on.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.faults.harness import ServiceStack
from tests.security.probes import Document

PROBLEM_JSON = "application/problem+json"
# Shared by every operation: shedding and a lost database.
ALWAYS = {503}
# (method, path, statuses beyond ALWAYS) by operationId, by service: the stable contract.
OPERATIONS: dict[str, dict[str, tuple[str, str, set[int]]]] = {
    "orders": {
        "listProducts": ("GET", "/v1/products", {200, 422}),
        "getProduct": ("GET", "/v1/products/{product_id}", {200, 404, 422}),
        "listCategories": ("GET", "/v1/categories", {200}),
        "placeOrder": ("POST", "/v1/orders",
                       {201, 202, 400, 401, 402, 409, 413, 422, 429}),
        "listOrders": ("GET", "/v1/orders", {200, 401, 422}),
        "getOrder": ("GET", "/v1/orders/{order_id}", {200, 401, 404, 422}),
        "cancelOrder": ("POST", "/v1/orders/{order_id}/cancel", {200, 401, 404, 409, 422}),
        "getCart": ("GET", "/v1/cart/items", {200, 401, 422}),
        "setCartItem": ("PUT", "/v1/cart/items", {200, 401, 413, 422}),
        "removeCartItems": ("DELETE", "/v1/cart/items", {200, 401, 422}),
        "createMerchant": ("POST", "/v1/merchants", {201, 401, 413, 422}),
        "rotateMerchantApiKey": ("POST", "/v1/merchant/api-key/rotate", {200, 401, 422}),
        "createMerchantProduct": ("POST", "/v1/merchant/products", {201, 401, 413, 422}),
        "listMerchantProducts": ("GET", "/v1/merchant/products", {200, 401, 422}),
        "updateMerchantProduct": ("PATCH", "/v1/merchant/products/{product_id}",
                                  {200, 401, 404, 413, 422}),
        "restockSku": ("POST", "/v1/merchant/skus/{sku_id}/restock",
                       {200, 401, 404, 409, 413, 422}),
    },
    "membership": {
        "registerMember": ("POST", "/v1/members", {201, 409, 413, 422}),
        "getMyProfile": ("GET", "/v1/members/me", {200, 401, 404, 422}),
        "listMyPoints": ("GET", "/v1/members/me/points", {200, 401, 422}),
        "issueToken": ("POST", "/v1/auth/token", {200, 401, 413, 422, 429}),
    },
    "payments": {
        "getPayment": ("GET", "/v1/payments/{payment_id}", {200, 401, 404, 422}),
        "listPayments": ("GET", "/v1/admin/payments", {200, 401, 422}),
        "getMerchantBalance": ("GET", "/v1/merchants/{merchant_id}/balance",
                               {200, 401, 404, 422}),
        "refundPayment": ("POST", "/v1/admin/payments/{payment_id}/refunds",
                          {201, 400, 401, 404, 409, 413, 422}),
    },
    "analytics": {
        "getGmv": ("GET", "/v1/analytics/gmv", {200, 401, 422}),
        "getTopProducts": ("GET", "/v1/analytics/top-products", {200, 401, 422}),
        "getPaymentSuccess": ("GET", "/v1/analytics/payments", {200, 401, 422}),
        "getOverview": ("GET", "/v1/analytics/overview", {200, 401, 422}),
        "getTop": ("GET", "/v1/analytics/top", {200, 401, 422}),
        "getGmvBy": ("GET", "/v1/analytics/gmv-by", {200, 401, 422}),
        "getMerchantInsights": ("GET", "/v1/insights/merchants/{merchant_id}",
                                {200, 401, 404, 422}),
        "getMyInsights": ("GET", "/v1/insights/me", {200, 401, 422}),
        "streamDashboard": ("GET", "/v1/analytics/stream", {200, 401, 422}),
    },
}
CREDENTIALS = {"authorization", "x-admin-key", "x-api-key"}


async def _document(http: httpx.AsyncClient, stack: ServiceStack, service: str) -> Document:
    answer = await http.get(f"{stack.url(service)}/openapi.json")
    assert answer.status_code == 200, answer.text
    return Document(answer.json())


def _problem_faults(doc: Document, where: str, response: dict[str, Any]) -> list[str]:
    """What keeps a documented 4xx/5xx from being problem+json with the full Problem schema."""
    content = response.get("content", {})
    if set(content) != {PROBLEM_JSON}:
        return [f"{where}: content {sorted(content)}, not only {PROBLEM_JSON}"]
    schema = content[PROBLEM_JSON].get("schema", {})
    # A problem with members of its own (a declined checkout's `order`) extends Problem.
    parts = [doc.resolve(s) for s in schema.get("allOf", [schema])]
    problem = next((p for p in parts if p.get("title") == "Problem"), None)
    if problem is None:
        return [f"{where}: schema is not Problem: {schema}"]
    properties = problem.get("properties", {})
    faults = [f"{where}: Problem lacks `{name}`" for name in
              ("type", "title", "status", "detail", "instance", "errors")
              if name not in properties]
    if set(problem.get("required", [])) != {"type", "title", "status"}:
        faults.append(f"{where}: Problem requires {problem.get('required')}")
    if "errors" in properties:
        item = doc.resolve(properties["errors"].get("items", {}))
        if "field" not in item.get("properties", {}) or "field" not in item.get("required", []):
            faults.append(f"{where}: Problem.errors[] has no required `field`: {item}")
    return faults


@pytest.mark.parametrize("service", list(OPERATIONS))
async def test_every_operation_is_tagged_summarised_and_has_its_stable_operation_id(
    stack: ServiceStack, http: httpx.AsyncClient, service: str
) -> None:
    doc = await _document(http, stack, service)
    found = {op.get("operationId"): (method, path, op) for method, path, op in doc.operations()}

    assert {i: (m, p) for i, (m, p, _) in found.items()} == {
        i: (m, p) for i, (m, p, _) in OPERATIONS[service].items()}
    for operation_id, (_, _, op) in found.items():
        assert op.get("tags"), f"{operation_id} has no tag"
        summary = op.get("summary", "")
        # FastAPI's own summary is the function's name in Title Case ("Register", "Gmv By").
        assert summary and summary != summary.title(), f"{operation_id}: summary {summary!r}"


@pytest.mark.parametrize("service", list(OPERATIONS))
async def test_every_operation_documents_each_answer_it_can_give_problems_as_problem_json(
    stack: ServiceStack, http: httpx.AsyncClient, service: str
) -> None:
    doc = await _document(http, stack, service)
    faults: list[str] = []
    for method, path, op in doc.operations():
        operation_id = op.get("operationId", f"{method} {path}")
        expected = ALWAYS | OPERATIONS[service].get(operation_id, ("", "", set()))[2]
        responses = op.get("responses", {})
        documented = {int(status) for status in responses}
        if documented != expected:
            faults.append(f"{operation_id}: documents {sorted(documented)}, "
                          f"answers {sorted(expected)}")
        headers = {p["name"].lower(): p for p in op.get("parameters", []) if p["in"] == "header"}
        if headers.keys() & CREDENTIALS and "401" not in responses:
            faults.append(f"{operation_id}: takes credentials, but no 401")
        key = headers.get("idempotency-key")
        if key is not None and not (key.get("required") and "400" in responses):
            faults.append(f"{operation_id}: Idempotency-Key not required, or no 400 for it")
        for status, response in responses.items():
            if status[0] in "45":
                faults += _problem_faults(doc, f"{operation_id} {status}", response)
                if status in ("429", "503") and "Retry-After" not in response.get("headers", {}):
                    faults.append(f"{operation_id} {status}: Retry-After undocumented")
    assert not faults, "\n".join(faults)


async def test_a_post_without_idempotency_key_answers_400_problem_json_and_does_nothing(
    stack: ServiceStack, auth: dict[str, str], http: httpx.AsyncClient
) -> None:
    """Every operation that documents the key as required, sent a valid request without it."""
    requiring: list[str] = []
    for service in OPERATIONS:
        doc = await _document(http, stack, service)
        for method, path, op in doc.operations():
            params = op.get("parameters", [])
            if not any(p["name"] == "Idempotency-Key" and p.get("required") for p in params):
                continue
            requiring.append(op["operationId"])
            url = stack.url(service) + path.format_map(
                {p["name"]: doc.valid(p["schema"]) for p in params if p["in"] == "path"})
            schema = doc.body_schema(op)
            answer = await http.request(method, url, headers=auth,
                                        json=None if schema is None else doc.valid(schema))

            assert answer.status_code == 400, (op["operationId"], answer.text)
            assert answer.headers["content-type"] == PROBLEM_JSON
            problem = answer.json()
            assert problem["type"].endswith("/missing-header")
            assert problem["field"] == "Idempotency-Key"
            assert problem["errors"] == [{"field": "Idempotency-Key", "message": "header required"}]
    assert {"placeOrder", "refundPayment"} <= set(requiring), requiring
    # The member's checkout without a key placed nothing.
    orders = await http.get(f"{stack.url('orders')}/v1/orders", headers=auth)
    assert orders.status_code == 200 and orders.json()["items"] == [], orders.text
