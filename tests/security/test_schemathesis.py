"""Schemathesis over each service's live OpenAPI, with auth: no 5xx, answers as documented.

Every operation of each service gets a bounded number of generated (positive) requests,
reproducibly (derandomize=True), sent with a member's Bearer token, the admin key and a
merchant's X-API-Key, and a fresh Idempotency-Key per request. About half the cases have
one string of their query or JSON body given a NUL, or one integer moved to a 64-bit edge
(`_hostile`). Checks: not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

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


# Integers just inside and past 64 bits, and far past: Postgres bigint and int64 end there.
EDGE_INTEGERS = (2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30)
Spot = tuple[str | int, ...]


def _spots(value: Any, path: Spot = ()) -> list[Spot]:
    """Where the strings and integers are inside a JSON value."""
    if isinstance(value, dict):
        return [spot for key, item in value.items() for spot in _spots(item, (*path, key))]
    if isinstance(value, list):
        return [spot for i, item in enumerate(value) for spot in _spots(item, (*path, i))]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return [path]
    return []


def _replaced(value: Any, path: Spot, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


@st.composite
def _hostile(draw: st.DrawFn, cases: st.SearchStrategy[Any]) -> Any:
    """A generated case, or the same with one string of its query or JSON body given a NUL
    or one integer moved to a 64-bit edge: refused (422) or served, never a 500."""
    case = draw(cases)
    spots = [("query", spot) for spot in _spots(case.query)]
    if isinstance(case.body, dict | list):
        spots += [("body", spot) for spot in _spots(case.body)]
    if not spots or not draw(st.booleans()):
        return case
    where, spot = draw(st.sampled_from(spots))
    container = getattr(case, where)
    old = container
    for part in spot:
        old = old[part]
    if isinstance(old, str):
        at = draw(st.integers(0, len(old)))
        new: Any = old[:at] + "\x00" + old[at:]
    else:
        new = draw(st.sampled_from(EDGE_INTEGERS))
    setattr(case, where, _replaced(container, spot, new))
    return case


def _excluded(service: str, method: str, path: str) -> bool:
    if (service, method.upper(), path) in EXCLUDED:
        return True
    return path.startswith("/dashboard")  # static assets of the analytics dashboard


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
            @given(case=_hostile(operation.as_strategy()))
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
