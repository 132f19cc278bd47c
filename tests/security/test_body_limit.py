"""Request bodies past the 1 MiB limit: refused with 413 as the limit is crossed, chunked or
not, without the serving process ever holding them — real service processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests import factories
from tests.faults.harness import ServiceStack

LIMIT = 1 << 20
BIG = 8 << 20
PIECE = 64 << 10
# A POST on each service whose route reads a JSON body (analytics has none).
BODY_ROUTES = {
    "membership": "/v1/members",
    "orders": "/v1/orders",
    "payments": f"/v1/admin/payments/{uuid.UUID(int=1)}/refunds",
}


async def chunked(head: bytes, filler: int, tail: bytes) -> AsyncIterator[bytes]:
    """A body httpx sends chunked (no Content-Length): `head`, `filler` bytes of 'a', `tail`."""
    yield head
    for _ in range(filler // PIECE):
        yield b"a" * PIECE
    yield tail


def reset_peak_rss(pid: int) -> int:
    """Start measuring `pid`'s peak resident set afresh (Linux clear_refs); its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return int(psutil.Process(pid).memory_info().rss)


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def assert_too_large(answer: httpx.Response) -> None:
    assert answer.status_code == 413, (answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/payload-too-large")
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_chunked_body_past_the_limit_is_refused_without_being_held(
    stack: ServiceStack, http: httpx.AsyncClient
) -> None:
    """The reported case: an unauthenticated chunked registration of 8 MB."""
    pid = stack.pid("membership")
    before = reset_peak_rss(pid)
    answer = await http.post(
        f"{stack.url('membership')}/v1/members",
        content=chunked(b'{"email": "', BIG, b'@example.com"}'),
        headers={"content-type": "application/json"},
    )
    assert_too_large(answer)
    grown = peak_rss(pid) - before
    assert grown < BIG // 2, f"membership's peak RSS grew by {grown} bytes for an 8 MB body"
    assert (await http.get(f"{stack.url('membership')}/healthz")).status_code == 200


@pytest.mark.parametrize("service", sorted(BODY_ROUTES))
async def test_every_service_refuses_a_body_past_the_limit_chunked_or_not(
    stack: ServiceStack, http: httpx.AsyncClient, service: str
) -> None:
    url = f"{stack.url(service)}{BODY_ROUTES[service]}"
    headers = {"content-type": "application/json", "x-admin-key": stack.admin_key}
    headers |= factories.idem()
    assert_too_large(await http.post(url, content=chunked(b'{"x": "', BIG, b'"}'),
                                     headers=headers))
    sized = b'{"x": "' + b"a" * (LIMIT + 1) + b'"}'  # with Content-Length: refused unread
    assert_too_large(await http.post(url, content=sized, headers=headers))
    assert (await http.get(f"{stack.url(service)}/healthz")).status_code == 200


async def test_a_chunked_body_within_the_limit_is_served(
    stack: ServiceStack, http: httpx.AsyncClient
) -> None:
    """Just under the limit (JSON whitespace makes up the size), in pieces."""
    email = f"chunked-{uuid.uuid4().hex[:12]}@example.com"
    head = f'{{"email": "{email}", "password": "{factories.PASSWORD}", "name": "Chunked", '
    tail = '"birth_year": 1990, "region": "CN-SH"}'
    padding = LIMIT - len(head) - len(tail) - 1

    async def body() -> AsyncIterator[bytes]:
        yield head.encode()
        for start in range(0, padding, PIECE):
            yield b" " * min(PIECE, padding - start)
        yield tail.encode()

    answer = await http.post(
        f"{stack.url('membership')}/v1/members", content=body(),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["email"] == email
