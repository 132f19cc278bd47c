"""The local load balancer (`marketplace up --replicas`): real HAProxy in front of replicas.

The replicas here are small threaded HTTP servers that say who they are and whether they
are ready, so the test sees exactly where HAProxy sent each request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from services.cli.balancer import Backend, Balancer, replica_states, start_balancer
from tests.infra import free_port

pytestmark = pytest.mark.topology


class Replica:
    def __init__(self, name: str) -> None:
        self.name, self.ready = name, True
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path != "/readyz" or replica.ready
                answer = self.headers.get("x-forwarded-for") if self.path == "/client" else None
                body = (answer or replica.name).encode()
                self.send_response(200 if ok else 503)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [Replica("one"), Replica("two")]
    yield started
    for replica in started:
        if replica.thread.is_alive():
            replica.stop()


@dataclass
class Balanced:
    url: str
    run_dir: Path
    balancer: Balancer

    def states(self) -> dict[str, str]:
        return dict(replica_states(self.run_dir))


@pytest.fixture
def balanced(replicas: list[Replica], tmp_path: Path) -> Iterator[Balanced]:
    """HAProxy in front of both replicas, both in rotation."""
    port, run_dir = free_port(), tmp_path / "lb"
    balancer = start_balancer([Backend("orders", port, [r.port for r in replicas])], run_dir)
    try:
        b = Balanced(f"http://127.0.0.1:{port}", run_dir, balancer)
        _until(lambda: set(b.states().values()) == {"UP"}, "both replicas UP")
        yield b
    finally:
        balancer.stop()
    assert balancer.proc.poll() is not None


def _until(condition: object, what: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_spreads_requests_and_drains_a_replica_that_stops(
    replicas: list[Replica], balanced: Balanced
) -> None:
    with httpx.Client(base_url=balanced.url, timeout=5) as client:
        seen = Counter(client.get("/who").text for _ in range(40))
        assert set(seen) == {"one", "two"}, seen

        replicas[0].ready = False  # draining: its /readyz answers 503
        _until(lambda: balanced.states()["orders/orders-1"] == "DOWN",
               "the draining replica to leave the rotation")
        assert {client.get("/who").text for _ in range(20)} == {"two"}

        replicas[0].ready = True
        _until(lambda: balanced.states()["orders/orders-1"] == "UP",
               "the replica to rejoin once ready")
        replicas[1].stop()  # gone without a word: connections are refused
        answers = [client.get("/who") for _ in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert {a.text for a in answers} == {"one"}


def test_the_replicas_see_the_shoppers_address_not_the_balancers(balanced: Balanced) -> None:
    """Per-client limits (sign-in attempts) need each shopper's own address behind HAProxy."""
    for shopper in ("127.0.0.2", "127.0.0.3"):
        transport = httpx.HTTPTransport(local_address=shopper)
        with httpx.Client(transport=transport, timeout=5) as client:
            assert client.get(f"{balanced.url}/client").text == shopper


def test_with_no_replica_ready_the_balancer_answers_a_problem_with_retry_after(
    replicas: list[Replica], balanced: Balanced
) -> None:
    for replica in replicas:
        replica.ready = False
    _until(lambda: set(balanced.states().values()) == {"DOWN"}, "both DOWN")
    answer = httpx.post(f"{balanced.url}/v1/orders", json={}, timeout=5)
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["type"].endswith("/unavailable")
    assert answer.json()["status"] == 503
