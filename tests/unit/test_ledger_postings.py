from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import ledger

MERCHANT = uuid.UUID(int=7)
PAYABLE = ledger.merchant_payable(MERCHANT)


def balances(*postings: ledger.Posting) -> dict[str, int]:
    totals: dict[str, int] = {}
    for posting in postings:
        for account, amount in posting.lines:
            totals[account] = totals.get(account, 0) + amount
    return {a: n for a, n in totals.items() if n}


def test_commission_is_rounded_down_to_the_fen() -> None:
    assert ledger.commission_on(10_000, 500) == 500
    assert ledger.commission_on(999, 500) == 49  # 49.95


def test_a_partial_capture_pays_merchant_and_platform_and_releases_the_rest() -> None:
    capture = ledger.capture(
        authorized=10_000, captured=6_000, commission=300, merchant_id=MERCHANT
    )
    assert balances(ledger.authorize(10_000), capture) == {
        "member_funding": -6_000, PAYABLE: 5_700, "platform_commission": 300,
    }


def test_a_void_returns_the_hold() -> None:
    assert balances(ledger.authorize(5_000), ledger.void(5_000)) == {}


def test_refund_returns_commission_proportionally_rounding_down() -> None:
    refund = ledger.refund(
        captured=999, commission=49, refunded_before=0, amount=500, merchant_id=MERCHANT
    )
    # 49 * 500 / 999 = 24.52… → 24 from the platform, the other 476 from the merchant.
    assert dict(refund.lines) == {PAYABLE: -476, "platform_commission": -24, "refunds": 500}


def test_zero_lines_are_left_out() -> None:
    capture = ledger.capture(authorized=100, captured=100, commission=0, merchant_id=MERCHANT)
    assert dict(capture.lines) == {"authorized_holds": -100, PAYABLE: 100}


def test_an_unbalanced_posting_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.Posting("refund", (("refunds", 1),))


@given(
    captured=st.integers(1, 10_000_000),
    bps=st.integers(0, 10_000),
    cuts=st.lists(st.floats(0, 1), max_size=6),
)
def test_refunds_in_any_slices_return_exactly_what_capture_paid(
    captured: int, bps: int, cuts: list[float]
) -> None:
    commission = ledger.commission_on(captured, bps)
    points = sorted({0, captured, *(int(c * captured) for c in cuts)})
    refunds = [
        ledger.refund(captured=captured, commission=commission, refunded_before=a,
                      amount=b - a, merchant_id=MERCHANT)
        for a, b in itertools.pairwise(points)
    ]
    capture = ledger.capture(
        authorized=captured, captured=captured, commission=commission, merchant_id=MERCHANT
    )
    assert balances(ledger.authorize(captured), capture, *refunds) == {
        "member_funding": -captured, "refunds": captured,
    }
    for step in refunds:
        platform = dict(step.lines).get("platform_commission", 0)
        assert platform <= 0 and dict(step.lines).get(PAYABLE, 0) <= 0
