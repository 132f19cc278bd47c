"""The points audit's per-order rule: reversals follow the refunded share, restores the end."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from services.cli.audit_points import _order_points

ORDER = uuid.uuid4()


def check(status: str, refunded: int, **ledger: int) -> list[str]:
    order: dict[str, Any] = {"status": status, "total": 40_000, "refunded": refunded,
                             "points_redeemed": 300}
    per_order: defaultdict[tuple[object, str], int] = defaultdict(int)
    for reason, delta in ledger.items():
        per_order[ORDER, reason] = delta
    return _order_points(ORDER, order, per_order)  # type: ignore[arg-type]


def test_a_partly_refunded_order_reversed_its_share_and_restored_nothing() -> None:
    assert check("CONFIRMED", 25_001, earn=400, redeem=-300, reverse=-250) == []


def test_a_partial_refund_that_reversed_everything_is_reported() -> None:
    assert check("CONFIRMED", 10_000, earn=400, reverse=-400) == [
        f"order {ORDER}: 400 of 400 earned points reversed, but 10000 of 40000 refunded "
        "takes back 100"]


def test_redeemed_points_restored_before_the_order_is_refunded_in_full_are_reported() -> None:
    assert check("CONFIRMED", 10_000, earn=400, redeem=-300, reverse=-100, restore=300) == [
        f"order {ORDER} is CONFIRMED: 300 of 300 redeemed points restored, expected 0"]


def test_a_refunded_order_reversed_all_and_restored_what_it_redeemed() -> None:
    assert check("REFUNDED", 40_000, earn=400, redeem=-300, reverse=-400, restore=300) == []
    assert check("REFUNDED", 40_000, earn=400, redeem=-300, reverse=-400) == [
        f"order {ORDER} is REFUNDED: 0 of 300 redeemed points restored, expected 300"]
