"""SQL for the analytics projections (schema `analytics`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.analytics.domain.orders import Contribution, OrderFact


async def lock_order(conn: asyncpg.Connection, order_id: uuid.UUID) -> OrderFact:
    """The order's state, row-locked until commit (created empty on its first event)."""
    # Insert first so that two replicas racing on a new order serialise on the row lock.
    await conn.execute(
        "INSERT INTO orders_fact (order_id) VALUES ($1) ON CONFLICT DO NOTHING", order_id
    )
    row = await conn.fetchrow(
        "SELECT status, total, confirmed_at, refunded, refunded_at FROM orders_fact "
        "WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    assert row is not None  # inserted just above, in this transaction
    return OrderFact(**dict(row))


async def save_order(
    conn: asyncpg.Connection, order_id: uuid.UUID, member_id: uuid.UUID | None, fact: OrderFact
) -> None:
    await conn.execute(
        "UPDATE orders_fact SET member_id = COALESCE(member_id, $2), status = $3, total = $4, "
        "confirmed_at = $5, refunded = $6, refunded_at = $7, updated_at = now() "
        "WHERE order_id = $1",
        order_id, member_id, fact.status, fact.total, fact.confirmed_at, fact.refunded,
        fact.refunded_at,
    )


async def add_contributions(conn: asyncpg.Connection, items: Iterable[Contribution]) -> None:
    for c in items:
        await conn.execute(
            "INSERT INTO gmv_minute (minute, gmv, refunds, orders) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (minute) DO UPDATE SET gmv = gmv_minute.gmv + EXCLUDED.gmv, "
            "refunds = gmv_minute.refunds + EXCLUDED.refunds, "
            "orders = gmv_minute.orders + EXCLUDED.orders",
            c.minute, c.gmv, c.refunds, c.orders,
        )


@dataclass(frozen=True, slots=True)
class LineSale:
    sku_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID | None
    category: str
    units: int
    gmv: int


async def add_product_sales(
    conn: asyncpg.Connection, minute: datetime, lines: Sequence[LineSale]
) -> None:
    if not lines:
        return
    await conn.executemany(
        "INSERT INTO product_sales (minute, sku_id, product_id, merchant_id, category, units, gmv) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (minute, sku_id) DO UPDATE SET "
        "units = product_sales.units + EXCLUDED.units, gmv = product_sales.gmv + EXCLUDED.gmv",
        [(minute, ln.sku_id, ln.product_id, ln.merchant_id, ln.category, ln.units, ln.gmv)
         for ln in lines],
    )


async def upsert_payment(
    conn: asyncpg.Connection,
    *,
    payment_id: uuid.UUID,
    order_id: uuid.UUID | None,
    member_id: uuid.UUID | None,
    status: str,
    status_rank: int,
    amount: int,
    captured: int,
    refunded: int,
    decline_code: str,
    at: datetime,
) -> None:
    """Merge one payment event; amounts only grow and status only moves forward."""
    await conn.execute(
        """
        INSERT INTO payments_fact (payment_id, order_id, member_id, status, status_rank, amount,
                                   captured, refunded, decline_code, first_seen_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
        ON CONFLICT (payment_id) DO UPDATE SET
            order_id = COALESCE(payments_fact.order_id, EXCLUDED.order_id),
            member_id = COALESCE(payments_fact.member_id, EXCLUDED.member_id),
            status = CASE WHEN EXCLUDED.status_rank > payments_fact.status_rank
                          THEN EXCLUDED.status ELSE payments_fact.status END,
            status_rank = GREATEST(payments_fact.status_rank, EXCLUDED.status_rank),
            amount = GREATEST(payments_fact.amount, EXCLUDED.amount),
            captured = GREATEST(payments_fact.captured, EXCLUDED.captured),
            refunded = GREATEST(payments_fact.refunded, EXCLUDED.refunded),
            decline_code = GREATEST(payments_fact.decline_code, EXCLUDED.decline_code),
            first_seen_at = LEAST(payments_fact.first_seen_at, EXCLUDED.first_seen_at),
            updated_at = GREATEST(payments_fact.updated_at, EXCLUDED.updated_at)
        """,
        payment_id, order_id, member_id, status, status_rank, amount, captured, refunded,
        decline_code, at,
    )


async def upsert_member(
    conn: asyncpg.Connection,
    *,
    member_id: uuid.UUID,
    age_band: str,
    region: str,
    gender: str,
    registered_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO members_dim (member_id, age_band, region, gender, registered_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id) DO UPDATE SET "
        "age_band = EXCLUDED.age_band, region = EXCLUDED.region, gender = EXCLUDED.gender, "
        "registered_at = EXCLUDED.registered_at",
        member_id, age_band, region, gender, registered_at,
    )


async def set_member_tier(
    conn: asyncpg.Connection, *, member_id: uuid.UUID, tier: str, changed_at: datetime
) -> None:
    """Keep the tier of the latest change, whichever change arrives last."""
    await conn.execute(
        "INSERT INTO members_dim (member_id, tier, tier_changed_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (member_id) DO UPDATE SET "
        "tier = CASE WHEN members_dim.tier_changed_at IS NULL "
        "OR EXCLUDED.tier_changed_at >= members_dim.tier_changed_at "
        "THEN EXCLUDED.tier ELSE members_dim.tier END, "
        "tier_changed_at = GREATEST(members_dim.tier_changed_at, EXCLUDED.tier_changed_at)",
        member_id, tier, changed_at,
    )
