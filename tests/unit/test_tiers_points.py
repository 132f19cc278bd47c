from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.membership.domain.points import (
    POINTS_PER_YUAN_REDEEMED,
    max_redeemable,
    points_earned,
    points_value_fen,
)
from services.membership.domain.tiers import (
    Tier,
    discount_bps,
    min_spend,
    points_multiplier,
    tier_for_spend,
)


@pytest.mark.parametrize(
    ("spend_fen", "tier"),
    [
        (-50_000, Tier.BRONZE),
        (0, Tier.BRONZE),
        (199_999, Tier.BRONZE),
        (200_000, Tier.SILVER),  # exactly ¥2,000
        (999_999, Tier.SILVER),
        (1_000_000, Tier.GOLD),  # exactly ¥10,000
        (4_999_999, Tier.GOLD),
        (5_000_000, Tier.PLATINUM),  # exactly ¥50,000
        (10**12, Tier.PLATINUM),
    ],
)
def test_tier_for_spend(spend_fen: int, tier: Tier) -> None:
    assert tier_for_spend(spend_fen) is tier


@pytest.mark.parametrize(
    ("tier", "bps", "multiplier", "threshold"),
    [
        (Tier.BRONZE, 0, Fraction(1), 0),
        (Tier.SILVER, 200, Fraction(1), 200_000),
        (Tier.GOLD, 500, Fraction(3, 2), 1_000_000),
        (Tier.PLATINUM, 800, Fraction(2), 5_000_000),
    ],
)
def test_tier_benefits(tier: Tier, bps: int, multiplier: Fraction, threshold: int) -> None:
    assert discount_bps(tier) == bps
    assert points_multiplier(tier) == multiplier
    assert min_spend(tier) == threshold


def test_gold_member_earns_one_and_a_half_points_per_whole_yuan() -> None:
    total = 299_900 - 14_995  # ¥2,999.00 less the 5% GOLD discount

    assert points_earned(total, Tier.GOLD) == 4_273  # floor(2,849 * 1.5)


@pytest.mark.parametrize(
    ("total_fen", "tier", "points"),
    [
        (0, Tier.PLATINUM, 0),
        (99, Tier.PLATINUM, 0),  # less than ¥1 earns nothing
        (199, Tier.BRONZE, 1),  # only whole yuan count
        (100, Tier.GOLD, 1),  # 1.5 rounds down
        (300, Tier.GOLD, 4),  # 4.5 rounds down
        (10_050, Tier.SILVER, 100),
        (10_050, Tier.PLATINUM, 200),
    ],
)
def test_points_earned(total_fen: int, tier: Tier, points: int) -> None:
    assert points_earned(total_fen, tier) == points


def test_a_negative_total_is_refused() -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        points_earned(-1, Tier.BRONZE)


def test_a_hundred_points_redeem_one_yuan() -> None:
    assert POINTS_PER_YUAN_REDEEMED == 100
    assert points_value_fen(100) == 100


@pytest.mark.parametrize(
    ("after_discount", "cap"), [(284_905, 142_452), (10_000, 5_000), (1, 0), (0, 0), (-5, 0)]
)
def test_max_redeemable_is_half_the_order(after_discount: int, cap: int) -> None:
    assert max_redeemable(after_discount) == cap


@given(st.integers(0, 10**13), st.sampled_from(list(Tier)))
def test_points_are_the_exact_product_rounded_down(total: int, tier: Tier) -> None:
    exact = Fraction(total // 100) * points_multiplier(tier)

    assert points_earned(total, tier) == exact.__floor__()


@given(st.integers(0, 10**13), st.integers(0, 10**6), st.sampled_from(list(Tier)))
def test_paying_more_never_earns_fewer_points(total: int, extra: int, tier: Tier) -> None:
    assert points_earned(total + extra, tier) >= points_earned(total, tier)


@given(st.integers(-(10**9), 10**13), st.integers(0, 10**9))
def test_spending_more_never_lowers_the_tier(spend: int, extra: int) -> None:
    order = list(Tier)
    assert order.index(tier_for_spend(spend + extra)) >= order.index(tier_for_spend(spend))


@given(st.integers(0, 10**13))
def test_redeemable_points_never_pay_more_than_half(after_discount: int) -> None:
    cap = max_redeemable(after_discount)

    assert 2 * points_value_fen(cap) <= after_discount < 2 * points_value_fen(cap + 1)
