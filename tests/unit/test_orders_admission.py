"""Checkout admission in memory: member token buckets, the hot-SKU gate, sold-out memory."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.auth import Member
from services.common.errors import Problem
from services.orders import saga
from services.orders.admission import Admission, Recent, SkuGate, Slots
from services.orders.context import Context
from services.orders.page_cache import PageCache
from services.orders.settings import OrdersSettings
from services.orders.store.stock import shares


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_admits_up_to_its_limit_per_sku_and_lets_go_on_exit() -> None:
    gate, hot, other = SkuGate(limit=1), uuid.uuid4(), uuid.uuid4()
    with gate.admit([hot]):
        with pytest.raises(Problem) as refused, gate.admit([other, hot]):
            pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
        with gate.admit([other]):
            pass
    with gate.admit([hot]):
        pass
    assert gate._in_flight == {}


def test_sold_out_memory_answers_only_for_what_it_saw_and_forgets() -> None:
    clock, sku = Clock(), uuid.uuid4()
    admission = Admission.build(burst=1, per_s=1, hot_limit=1, sold_out_s=1.0, clock=clock)
    admission.sold_out(sku, 2)
    assert admission.known_short([(sku, 3)]) == sku
    assert admission.known_short([(sku, 2)]) is None
    clock.now = 1.0
    assert admission.known_short([(sku, 3)]) is None


def test_recent_values_expire() -> None:
    clock, sku = Clock(), uuid.uuid4()
    recent = Recent(ttl_s=5, clock=clock)
    recent.put(sku, 1)
    clock.now = 4.9
    assert recent.get(sku) == 1
    clock.now = 5.0
    assert recent.get(sku) is None


@pytest.mark.parametrize(("quantity", "buckets", "expected"),
                         [(12, 8, [2, 2, 2, 2, 1, 1, 1, 1]), (3, 4, [1, 1, 1, 0]), (0, 2, [0, 0])])
def test_stock_spreads_over_buckets_to_the_unit(quantity, buckets, expected) -> None:
    assert shares(quantity, buckets) == expected
    assert sum(shares(quantity, buckets)) == quantity


def test_fault_injection_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="fault injection"):
        OrdersSettings(database_url="postgresql://x", environment="production",
                       internal_auth_secret="a-real-production-secret",
                       fault_crash_at="after_capture")
    test = OrdersSettings(database_url="postgresql://x", environment="test",
                          fault_crash_at="after_capture")
    assert test.fault_crash_at == "after_capture"


def test_checkouts_beyond_the_limit_are_shed_with_503_and_retry_after() -> None:
    slots = Slots(limit=2)
    with slots.enter(), slots.enter():
        with pytest.raises(Problem) as shed, slots.enter():
            pass
        assert shed.value.status == 503
        assert shed.value.slug == "overloaded"
        assert shed.value.headers["Retry-After"] == "1"
    with slots.enter():  # finished checkouts give their slots back
        assert slots.in_flight == 1
    assert slots.in_flight == 0


class _NoDatabase:
    """A pool that fails the test if the checkout asks it for anything."""

    def acquire(self) -> None:
        raise AssertionError("a checkout about to be shed queried the database")


def _checkout_context(admission: Admission) -> Any:
    return Context(settings=None, pool=_NoDatabase(), payments=None,  # type: ignore[arg-type]
                   membership=None, verifier=None, admission=admission,  # type: ignore[arg-type]
                   listings=PageCache(1.0), pipeline=None)  # type: ignore[arg-type]


async def test_a_checkout_that_would_be_shed_costs_no_query() -> None:
    admission = Admission.build(burst=5, per_s=1, hot_limit=8, sold_out_s=1, max_checkouts=1)
    ctx = _checkout_context(admission)
    request = saga.CheckoutRequest(items=((uuid.uuid4(), 1),), payment_token="tok_visa",
                                   points_to_redeem=0)
    # The only slot is taken.
    with admission.checkouts.enter(), pytest.raises(Problem) as shed:
        await saga.place_order(ctx, member=Member(id=uuid.uuid4(), tier="BRONZE"),
                               request=request, idempotency_key="k")
    assert shed.value.status == 503 and shed.value.headers["Retry-After"] == "1"


async def test_a_known_hot_skus_crowd_meets_the_sku_gate_before_general_shedding() -> None:
    admission = Admission.build(burst=5, per_s=1, hot_limit=1, sold_out_s=1, max_checkouts=1)
    hot = uuid.uuid4()
    admission.hot.put(hot, 1)
    ctx = _checkout_context(admission)
    request = saga.CheckoutRequest(items=((hot, 1),), payment_token="tok_visa",
                                   points_to_redeem=0)
    with (admission.checkouts.enter(), admission.hot_gate.admit([hot]),
          pytest.raises(Problem) as refused):
        await saga.place_order(ctx, member=Member(id=uuid.uuid4(), tier="BRONZE"),
                               request=request, idempotency_key="k")
    assert refused.value.status == 429
