"""A member's standing (lifetime spend, tier, points) and what a confirmed order does to it."""

from __future__ import annotations

from dataclasses import dataclass

from services.membership.domain.points import points_earned
from services.membership.domain.tiers import Tier, tier_for_spend


@dataclass(frozen=True, slots=True)
class Standing:
    lifetime_spend: int  # fen, net of refunds
    tier: Tier
    points_balance: int


@dataclass(frozen=True, slots=True)
class Confirmed:
    """One confirmed order applied to a standing."""

    before: Standing
    after: Standing
    points: int  # earned at the tier held before the order

    @property
    def tier_changed(self) -> bool:
        return self.after.tier != self.before.tier


def confirm(standing: Standing, total: int) -> Confirmed:
    """Add the order to lifetime spend; its points are earned at the tier held before it."""
    points = points_earned(total, standing.tier)
    spend = standing.lifetime_spend + total
    after = Standing(lifetime_spend=spend, tier=tier_for_spend(spend),
                     points_balance=standing.points_balance + points)
    return Confirmed(before=standing, after=after, points=points)
