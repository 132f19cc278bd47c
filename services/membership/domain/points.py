"""Loyalty points: earning on paid orders and the cap on redeeming them."""

from __future__ import annotations

from fractions import Fraction

from services.membership.domain.tiers import Tier, points_multiplier

FEN_PER_YUAN = 100
POINTS_PER_YUAN_EARNED = 1
POINTS_PER_YUAN_REDEEMED = 100  # so one point is worth one fen
MAX_REDEEMABLE_SHARE = Fraction(1, 2)


def points_earned(total_paid_fen: int, tier: Tier) -> int:
    """1 point per whole ¥1 paid, times the tier multiplier, rounded down."""
    if total_paid_fen < 0:
        raise ValueError(f"total paid must be ≥ 0 fen, got {total_paid_fen}")
    base = total_paid_fen // FEN_PER_YUAN * POINTS_PER_YUAN_EARNED
    multiplier = points_multiplier(tier)
    return base * multiplier.numerator // multiplier.denominator


def points_value_fen(points: int) -> int:
    """What `points` pay for, in fen, when redeemed."""
    return points * FEN_PER_YUAN // POINTS_PER_YUAN_REDEEMED


def max_redeemable(order_total_after_discount: int) -> int:
    """Most points one order may redeem: worth at most half of it after the tier discount."""
    cap_fen = (
        max(order_total_after_discount, 0)
        * MAX_REDEEMABLE_SHARE.numerator
        // MAX_REDEEMABLE_SHARE.denominator
    )
    return cap_fen * POINTS_PER_YUAN_REDEEMED // FEN_PER_YUAN
