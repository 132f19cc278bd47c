"""Membership tiers by lifetime net spend, with each tier's discount and points multiplier."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction


class Tier(StrEnum):
    BRONZE = "BRONZE"
    SILVER = "SILVER"
    GOLD = "GOLD"
    PLATINUM = "PLATINUM"


@dataclass(frozen=True, slots=True)
class TierRule:
    tier: Tier
    min_spend: int  # fen of lifetime confirmed spend, net of refunds
    discount_bps: int
    points_multiplier: Fraction


# Ascending by min_spend; tier_for_spend relies on that order.
TIER_RULES: tuple[TierRule, ...] = (
    TierRule(Tier.BRONZE, 0, 0, Fraction(1)),
    TierRule(Tier.SILVER, 200_000, 200, Fraction(1)),
    TierRule(Tier.GOLD, 1_000_000, 500, Fraction(3, 2)),
    TierRule(Tier.PLATINUM, 5_000_000, 800, Fraction(2)),
)
_BY_TIER = {rule.tier: rule for rule in TIER_RULES}


def tier_for_spend(lifetime_net_spend_fen: int) -> Tier:
    """The highest tier whose threshold the spend reaches; negative spend counts as 0."""
    spend = max(lifetime_net_spend_fen, 0)
    return next(rule.tier for rule in reversed(TIER_RULES) if spend >= rule.min_spend)


def min_spend(tier: Tier) -> int:
    """Lifetime net spend in fen from which a member holds `tier`."""
    return _BY_TIER[tier].min_spend


def discount_bps(tier: Tier) -> int:
    """Tier discount on merchandise in basis points (500 = 5%)."""
    return _BY_TIER[tier].discount_bps


def points_multiplier(tier: Tier) -> Fraction:
    return _BY_TIER[tier].points_multiplier
