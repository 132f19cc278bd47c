"""Orders prices with each tier's discount as membership grades it: one rate table each side."""

from __future__ import annotations

from services.membership.domain.tiers import TIER_RULES
from services.orders.domain.pricing import ENTRY_TIER, TIER_DISCOUNT_BPS, discount_for


def test_orders_tier_discounts_are_membership_s() -> None:
    assert {rule.tier.value: rule.discount_bps for rule in TIER_RULES} == TIER_DISCOUNT_BPS
    assert TIER_RULES[0].tier.value == ENTRY_TIER


def test_a_discount_is_rounded_down_to_the_fen() -> None:
    assert discount_for(12_999, 200) == 259  # 259.98
    assert discount_for(12_999, 0) == 0
