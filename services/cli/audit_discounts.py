"""The discount invariant: each order's discount is its recorded tier's, by the pricing rule."""

from __future__ import annotations

import asyncpg

from services.cli.audit_window import Scope
from services.orders.domain.pricing import TIER_DISCOUNT_BPS, discount_for


async def check_discounts(conn: asyncpg.Connection, scope: Scope | None = None):  # -> audit.Check
    """Per order, against the tier orders recorded on it when pricing (not membership's tier
    of today: a promotion reaches checkout within the event lag, ARCHITECTURE.md): its
    discount_bps is that tier's, and discount = floor(subtotal x bps / 10000). Orders placed
    before the tier was recorded have none and are not checked. Streamed: the caller's
    transaction holds the cursor."""
    from services.cli.audit import Check

    scope = scope or Scope.whole()
    checked, bad = 0, []
    async for r in conn.cursor(
        "SELECT id, tier, discount_bps, subtotal, discount FROM orders.orders "
        "WHERE tier IS NOT NULL AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))",
        scope.orders, prefetch=5_000,
    ):
        checked += 1
        scope.counted("orders' discounts", checked)
        bad += _order_discount(r)
    return Check("each order's discount is the one of the tier recorded on it", checked, bad)


def _order_discount(order: asyncpg.Record) -> list[str]:
    tier, bps = order["tier"], order["discount_bps"]
    if TIER_DISCOUNT_BPS.get(tier) != bps:
        return [f"order {order['id']} records tier {tier} with {bps} bps, but {tier}'s "
                f"discount is {TIER_DISCOUNT_BPS.get(tier)} bps"]
    expected = discount_for(order["subtotal"], bps)
    if order["discount"] != expected:
        return [f"order {order['id']}: discount {order['discount']} on a subtotal of "
                f"{order['subtotal']} at {tier} ({bps} bps), but the rule gives {expected}"]
    return []
