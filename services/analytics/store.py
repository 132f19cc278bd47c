"""SQL for the analytics projections (schema `analytics`).

Per-order state is read and written row by row (a transition depends on it); every
other table is merged by SQL that gives the same row whatever order events arrive in,
queued on a `Writes` and sent when the batch flushes.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.analytics.domain.orders import OrderFact


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


# $1 payment_id, $2 order_id, $3 member_id, $4 status, $5 status_rank, $6 amount,
# $7 captured, $8 refunded, $9 decline_code, $10 occurred at. Amounts only grow, status
# only moves forward.
MERGE_PAYMENT = """
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
"""

# $1 member_id, $2 age_band, $3 region, $4 gender, $5 registered_at.
MERGE_MEMBER = (
    "INSERT INTO members_dim (member_id, age_band, region, gender, registered_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id) DO UPDATE SET "
    "age_band = EXCLUDED.age_band, region = EXCLUDED.region, gender = EXCLUDED.gender, "
    "registered_at = EXCLUDED.registered_at"
)

# $1 member_id, $2 tier, $3 changed_at: the tier of the latest change, whichever arrives last.
MERGE_TIER = (
    "INSERT INTO members_dim (member_id, tier, tier_changed_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (member_id) DO UPDATE SET "
    "tier = CASE WHEN members_dim.tier_changed_at IS NULL "
    "OR EXCLUDED.tier_changed_at >= members_dim.tier_changed_at "
    "THEN EXCLUDED.tier ELSE members_dim.tier END, "
    "tier_changed_at = GREATEST(members_dim.tier_changed_at, EXCLUDED.tier_changed_at)"
)

# $1 merchant_id, $2 name, $3 api_key_hash, $4 occurred_at: the key of the latest change.
MERGE_MERCHANT = (
    "INSERT INTO merchants (merchant_id, name, api_key_hash, key_set_at) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id) DO UPDATE SET "
    # Merchants are never renamed: keep the one non-empty name, whichever event carried it.
    "name = CASE WHEN merchants.name = '' THEN EXCLUDED.name ELSE merchants.name END, "
    "api_key_hash = CASE WHEN (EXCLUDED.key_set_at, EXCLUDED.api_key_hash) > "
    "(merchants.key_set_at, merchants.api_key_hash) "
    "THEN EXCLUDED.api_key_hash ELSE merchants.api_key_hash END, "
    "key_set_at = GREATEST(merchants.key_set_at, EXCLUDED.key_set_at)"
)


async def merchant_by_key_hash(conn: asyncpg.Connection, key_hash: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT merchant_id FROM merchants WHERE api_key_hash = $1", key_hash
    )
    return found
