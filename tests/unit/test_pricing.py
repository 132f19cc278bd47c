from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.membership.domain.points import max_redeemable
from services.membership.domain.tiers import Tier, discount_bps
from services.orders.domain.pricing import (
    MAX_LINES,
    PricedLine,
    PricingError,
    max_points_redeemable,
    price_order,
)

PRODUCT, MERCHANT = uuid4(), uuid4()


def line(unit_price: int, quantity: int = 1, sku_id: UUID | None = None) -> PricedLine:
    return PricedLine(sku_id or uuid4(), PRODUCT, MERCHANT, quantity, unit_price)


def test_lines_are_totalled_and_summed() -> None:
    a, b = line(12_999, quantity=2), line(500, quantity=3)

    quote = price_order([a, b], discount_bps=0, points_to_redeem=0)

    assert [(q.sku_id, q.line_total) for q in quote.lines] == [
        (a.sku_id, 25_998),
        (b.sku_id, 1_500),
    ]
    assert quote.lines[0].unit_price == 12_999
    assert (quote.subtotal, quote.discount, quote.points_redeemed, quote.total) == (
        27_498,
        0,
        0,
        27_498,
    )


def test_gold_member_gets_five_percent_off_a_2999_yuan_order() -> None:
    quote = price_order([line(299_900)], discount_bps=discount_bps(Tier.GOLD), points_to_redeem=0)

    assert quote.discount == 14_995
    assert quote.total == 284_905


def test_discount_is_rounded_down_to_the_fen() -> None:
    quote = price_order([line(1_999)], discount_bps=200, points_to_redeem=0)  # 39.98 fen

    assert quote.discount == 39
    assert quote.total == 1_960


def test_points_may_pay_exactly_half_of_the_discounted_order() -> None:
    # ¥100.00 at 8% off is ¥92.00; half of that is 4,600 points.
    quote = price_order([line(10_000)], discount_bps=800, points_to_redeem=4_600)

    assert quote.points_redeemed == 4_600
    assert quote.total == 4_600


def test_one_point_over_half_is_refused_with_the_field() -> None:
    with pytest.raises(PricingError, match="at most 4600 points") as err:
        price_order([line(10_000)], discount_bps=800, points_to_redeem=4_601)

    assert err.value.field == "points_to_redeem"


def test_the_points_cap_rounds_down_on_an_odd_amount() -> None:
    assert price_order([line(10_001)], discount_bps=0, points_to_redeem=5_000).total == 5_001
    with pytest.raises(PricingError):
        price_order([line(10_001)], discount_bps=0, points_to_redeem=5_001)


def test_points_beyond_the_balance_are_refused() -> None:
    with pytest.raises(PricingError, match="only 300 points available") as err:
        price_order([line(10_000)], discount_bps=0, points_to_redeem=301, points_balance=300)

    assert err.value.field == "points_to_redeem"


def test_the_whole_balance_may_be_redeemed() -> None:
    quote = price_order([line(10_000)], discount_bps=0, points_to_redeem=300, points_balance=300)

    assert quote.total == 9_700


def test_negative_points_are_refused() -> None:
    with pytest.raises(PricingError) as err:
        price_order([line(10_000)], discount_bps=0, points_to_redeem=-1)

    assert err.value.field == "points_to_redeem"


@pytest.mark.parametrize("quantity", [-1, 0, 101])
def test_quantity_outside_1_to_100_is_refused(quantity: int) -> None:
    with pytest.raises(PricingError, match=r"quantity must be 1\.\.100") as err:
        price_order([line(100), line(100, quantity)], discount_bps=0, points_to_redeem=0)

    assert err.value.field == "items[1].quantity"


def test_quantity_100_is_allowed() -> None:
    assert price_order([line(100, 100)], discount_bps=0, points_to_redeem=0).subtotal == 10_000


def test_negative_unit_price_is_refused() -> None:
    with pytest.raises(PricingError, match="negative price"):
        price_order([line(-1)], discount_bps=0, points_to_redeem=0)


def test_an_empty_order_is_refused() -> None:
    with pytest.raises(PricingError, match="at least one line") as err:
        price_order([], discount_bps=0, points_to_redeem=0)

    assert err.value.field == "items"


def test_at_most_50_lines() -> None:
    fifty = [line(1) for _ in range(MAX_LINES)]
    assert len(price_order(fifty, discount_bps=0, points_to_redeem=0).lines) == 50
    with pytest.raises(PricingError, match="at most 50 lines, got 51"):
        price_order([line(1) for _ in range(MAX_LINES + 1)], discount_bps=0, points_to_redeem=0)


def test_a_duplicate_sku_is_named() -> None:
    sku = uuid4()

    with pytest.raises(PricingError, match=str(sku)) as err:
        price_order(
            [line(100, sku_id=sku), line(200, sku_id=sku)], discount_bps=0, points_to_redeem=0
        )

    assert err.value.field == "items[1].sku_id"


@pytest.mark.parametrize("bps", [-1, 10_001])
def test_discount_outside_0_to_100_percent_is_refused(bps: int) -> None:
    with pytest.raises(PricingError):
        price_order([line(100)], discount_bps=bps, points_to_redeem=0)


orders = st.lists(
    st.tuples(st.integers(0, 10_000_000), st.integers(1, 100)), min_size=1, max_size=MAX_LINES
)


@given(orders, st.sampled_from([0, 200, 500, 800]), st.floats(0, 1))
def test_amounts_always_add_up(items: list[tuple[int, int]], bps: int, points_share: float) -> None:
    subtotal = sum(price * qty for price, qty in items)
    after_discount = subtotal - subtotal * bps // 10_000
    points = int(max_points_redeemable(after_discount) * points_share)

    quote = price_order([line(p, q) for p, q in items], discount_bps=bps, points_to_redeem=points)

    assert quote.total + quote.discount + quote.points_redeemed == quote.subtotal == subtotal
    assert quote.total >= quote.points_redeemed >= 0
    assert quote.discount * 10_000 <= subtotal * bps < (quote.discount + 1) * 10_000


@given(st.integers(-1_000, 10**12))
def test_orders_and_membership_agree_on_the_points_cap(after_discount: int) -> None:
    assert max_points_redeemable(after_discount) == max_redeemable(after_discount)
