"""Schemathesis over each service's live OpenAPI, with auth: no 5xx, answers as documented.

Every operation of each service gets a bounded number of generated (positive) requests,
reproducibly (derandomize=True), sent with a member's Bearer token, the admin key and a
merchant's X-API-Key, and a fresh Idempotency-Key per request. Checks: not_a_server_error,
status_code_conformance, content_type_conformance, response_schema_conformance.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

from tests import factories
from tests.faults.harness import ServiceStack

MAX_EXAMPLES = 20
# orders last: its fuzzing rotates the merchant key that the `auth` fixture shares.
SERVICES = ("membership", "payments", "analytics", "orders")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
ROTATE = "/v1/merchant/api-key/rotate"
# Operations that cannot be exercised meaningfully by request/response fuzzing:
EXCLUDED = {
    # An SSE stream: the answer never ends, so there is no response to validate.
    ("analytics", "GET", "/v1/analytics/stream"),
}


def _excluded(service: str, method: str, path: str) -> bool:
    if (service, method.upper(), path) in EXCLUDED:
        return True
    return path.startswith("/dashboard")  # static assets of the analytics dashboard


async def _member_auth(http: httpx.AsyncClient, membership: str) -> dict[str, str]:
    """A new member's Bearer header; sign-in waits out the per-client limit (429 + Retry-After)
    that other tests of this package's stack may have used up."""
    body = {
        "email": f"fuzz-{uuid.uuid4().hex[:12]}@example.com", "password": factories.PASSWORD,
        "name": "Fuzz Member", "birth_year": 1990, "region": "CN-SH",
    }  # fmt: skip
    created = await http.post(f"{membership}/v1/members", json=body)
    assert created.status_code == 201, created.text
    credentials = {"email": body["email"], "password": body["password"]}
    for _ in range(30):
        token = await http.post(f"{membership}/v1/auth/token", json=credentials)
        if token.status_code != 429:
            break
        await asyncio.sleep(min(float(token.headers.get("retry-after", "1")), 5.0))
    assert token.status_code == 200, token.text
    return {"authorization": f"Bearer {token.json()['access_token']}"}


@pytest.fixture(scope="module")
async def auth(stack: ServiceStack) -> dict[str, str]:
    """A member's Bearer token, the admin key and a merchant's X-API-Key, sent on every case."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        member = await _member_auth(http, stack.url("membership"))
        created = await http.post(
            f"{stack.url('orders')}/v1/merchants", json={"name": "Fuzz Merchant"},
            headers={"x-admin-key": stack.admin_key},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        api_key = created.json()["api_key"]
        # analytics learns merchant keys from orders.merchant.* events: wait until it knows this
        for _ in range(100):
            known = await http.get(f"{stack.url('analytics')}/v1/insights/me",
                                   headers={"x-api-key": api_key})  # fmt: skip
            if known.status_code != 401:
                break
            await asyncio.sleep(0.1)
    return member | {"x-admin-key": stack.admin_key, "x-api-key": api_key}


def _short(failure: BaseException) -> str:
    return " ".join(str(failure).split())[:400]


def _fuzz(service: str, base_url: str, auth: dict[str, str]) -> list[str]:
    """Run every operation of one service; return the failures (empty when all is well)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    failures: list[str] = []
    session = requests.Session()
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        # Rotating the merchant's key revokes the key every later request sends: run it last.
        operations.sort(key=lambda op: op.path == ROTATE)
        for operation in operations:
            if _excluded(service, operation.method, operation.path):
                continue

            @settings(
                max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=operation.as_strategy())
            def run(case: Any) -> None:
                headers = auth | {"idempotency-key": str(uuid.uuid4())}
                case.call_and_validate(
                    base_url=base_url, session=session, headers=headers, checks=CHECKS,
                    timeout=10,
                )  # fmt: skip

            try:
                run()
            except (Exception, FailureGroup) as exc:  # collect all, report together
                found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                label = f"{operation.method.upper()} {operation.path}"
                failures += [f"{label}: {_short(f)}" for f in found]
    finally:
        session.close()
    return failures


@pytest.mark.parametrize("service", SERVICES)
async def test_openapi_fuzz_no_server_errors_and_schema_conformance(
    stack: ServiceStack, auth: dict[str, str], service: str
) -> None:
    failures = await asyncio.to_thread(_fuzz, service, stack.url(service), auth)
    assert not failures, "\n\n".join(failures)
