"""Strict input in every service, probed from each service's live OpenAPI document.

Every string parameter and body field (nested ones included) with a NUL, every integer
past 64 bits, every body integer as `"1"`, `1.0` and `true`, every body boolean as
`"true"` and `1`, and every body object with an unknown field (tests/security/probes.py)
must answer 422 problem+json naming that field, and leave the connection open for the
next request. A parameter added later is probed without a new test.

Requests carry a member's token, the admin key and a merchant's API key (`auth`): FastAPI
runs the authentication dependencies before it validates the rest, by design, and these
let validation answer. Header parameters cannot carry a NUL at all (HTTP forbids it): the
server's parser answers 400 before the app sees one, which is what is checked for them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests import factories
from tests.faults.harness import Catalog, ServiceStack
from tests.security.probes import NUL, Document, Probe, names

SERVICES = ("membership", "payments", "analytics", "orders")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PROBLEM_JSON = "application/problem+json"


async def _document(http: httpx.AsyncClient, base_url: str) -> Document:
    answer = await http.get(f"{base_url}/openapi.json")
    assert answer.status_code == 200, answer.text
    return Document(answer.json())


def _connection(answer: httpx.Response) -> Any:
    """The client's end of the TCP connection that carried the answer."""
    return answer.extensions["network_stream"].get_extra_info("client_addr")


def _refusal_fault(answer: httpx.Response, probe: Probe) -> str | None:
    """What is wrong with the answer to a probe, None if it is the 422 expected."""
    if answer.status_code == 422 and answer.headers["content-type"] == PROBLEM_JSON:
        problem = answer.json()
        if problem["type"].endswith("/validation-error") and names(probe.field, problem["errors"]):
            return None
    return f"{probe}: {answer.status_code} {answer.text[:300]}"


@pytest.mark.parametrize("service", SERVICES)
async def test_every_parameter_and_body_field_is_strict(
    stack: ServiceStack, auth: dict[str, str], service: str
) -> None:
    faults: list[str] = []
    # One connection for everything: a probe that closes it shows in the next request.
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        base_url = stack.url(service)
        probes = list((await _document(http, base_url)).probes())
        assert len(probes) > 10, probes
        previous: tuple[Probe, Any] | None = None
        for probe in probes:
            try:
                async with asyncio.timeout(20):  # an accepted probe may open an endless stream
                    answer = await http.request(
                        probe.method, base_url + probe.url, params=probe.query,
                        json=probe.body, headers=auth | factories.idem(),
                    )  # fmt: skip
            except (TimeoutError, httpx.TransportError) as exc:
                faults.append(f"{probe}: no answer ({exc!r})")
                continue
            if fault := _refusal_fault(answer, probe):
                faults.append(fault)
            if previous is not None and previous[1] != _connection(answer):
                faults.append(f"the connection did not survive the answer to {previous[0]}")
            previous = probe, _connection(answer)
        after = await http.get(f"{base_url}/healthz")
        assert after.status_code == 200
        assert previous is not None and _connection(after) == previous[1], "connection closed"
    assert not faults, f"{len(faults)} of {len(probes)} probes:\n" + "\n".join(faults)


@pytest.mark.parametrize("service", SERVICES)
async def test_openapi_declares_closed_bodies_and_64_bit_integers(
    stack: ServiceStack, http: httpx.AsyncClient, service: str
) -> None:
    faults = []
    for where, schema in (await _document(http, stack.url(service))).input_schemas():
        if schema.get("properties") and schema.get("additionalProperties") is not False:
            faults.append(f"{where}: additionalProperties is not false")
        if schema.get("type") == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            if schema.get("format") != "int64" or not all(
                isinstance(b, int) and INT64_MIN <= b <= INT64_MAX for b in (low, high)
            ):
                faults.append(f"{where}: integer without int64 bounds: {schema}")
    assert not faults, "\n".join(faults)


async def _raw_status(port: int, method: str, path: str, header: str, value: bytes) -> int:
    """The status a request with this header value gets, sent as bytes (no client would)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     f"{header}: ".encode() + value + b"\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize("service", SERVICES)
async def test_header_parameters_with_nul_or_absurd_length_answer_4xx(
    stack: ServiceStack, auth: dict[str, str], http: httpx.AsyncClient, service: str
) -> None:
    doc = await _document(http, stack.url(service))
    headers = doc.header_names()
    assert headers, "no header parameters documented"
    for header, (method, template, operation) in headers.items():
        path = template.format_map(_AnyId())
        nul = await _raw_status(stack.ports.http[service], method, path, header, NUL.encode())
        assert nul == 400, (header, path, nul)
        body_schema = doc.body_schema(operation)
        answer = await http.request(
            method, stack.url(service) + path,
            headers=auth | factories.idem() | {header.lower(): "k" * 10_000},
            json=None if body_schema is None else doc.valid(body_schema),
        )  # fmt: skip
        assert 400 <= answer.status_code < 500, (header, path, answer.status_code, answer.text)
        assert answer.headers["content-type"] == PROBLEM_JSON


class _AnyId(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())


async def _processor_refunds(http: httpx.AsyncClient, payments: str) -> float:
    """Refund calls the card processor has had, by the payments service's own metric."""
    text = (await http.get(f"{payments}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("marketplace_payments_processor_calls_total{")
               and 'operation="refund"' in line)


async def test_a_refund_refused_for_its_reason_never_reaches_the_processor(
    stack: ServiceStack, catalog: Catalog, http: httpx.AsyncClient
) -> None:
    buyer = await factories.member(http, stack.url("membership"))
    placed = await http.post(f"{stack.url('orders')}/v1/orders",
                             json=factories.order_body(catalog.sku_id),
                             headers=buyer.auth | factories.idem())  # fmt: skip
    assert placed.status_code == 201, placed.text
    payment_id = uuid.UUID(placed.json()["payment_id"])
    payments = stack.url("payments")
    calls = await _processor_refunds(http, payments)
    refunds = f"{payments}/v1/admin/payments/{payment_id}/refunds"
    admin = {"x-admin-key": stack.admin_key}

    answer = await http.post(refunds, json={"reason": NUL}, headers=admin | factories.idem())
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "reason"
    assert await _processor_refunds(http, payments) == calls
    row = (await stack.sql("SELECT status, refunded FROM payments.payments WHERE id = $1",
                           payment_id))[0]  # fmt: skip
    assert (row["status"], row["refunded"]) == ("CAPTURED", 0)
    assert not await stack.sql("SELECT 1 FROM payments.refunds WHERE payment_id = $1", payment_id)

    # The same refund with a clean reason goes through: only the reason was refused.
    done = await http.post(refunds, json={"reason": "changed mind"},
                           headers=admin | factories.idem())
    assert done.status_code == 201, done.text
    assert await _processor_refunds(http, payments) == calls + 1
