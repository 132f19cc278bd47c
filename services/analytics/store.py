"""SQL for the analytics projections (schema `analytics`).

Per-order state is locked and read for a whole batch at once, changed in memory (a
transition depends on it) and written back in one statement; every other table is merged
by SQL that gives the same row whatever order events arrive in, queued on a `Writes` and
sent when the batch flushes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

import asyncpg

from services.analytics.domain.orders import OrderFact
from services.common.purge import Purge


async def lock_orders(
    conn: asyncpg.Connection, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, OrderFact]:
    """The orders' state, row-locked until commit (created empty on their first event)."""
    ids = sorted(set(order_ids))  # one lock order for every replica: no deadlocks
    # Insert first so that two replicas racing on a new order serialise on the row lock.
    await conn.execute(
        "INSERT INTO orders_fact (order_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
        ids,
    )
    rows = await conn.fetch(
        "SELECT order_id, status, total, confirmed_at, refunded, refunded_at FROM orders_fact "
        "WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE",
        ids,
    )
    facts = {r["order_id"]: OrderFact(r["status"], r["total"], r["confirmed_at"],
                                      r["refunded"], r["refunded_at"]) for r in rows}
    assert len(facts) == len(ids)  # inserted just above, in this transaction
    return facts


async def save_orders(
    conn: asyncpg.Connection, facts: Mapping[uuid.UUID, tuple[uuid.UUID | None, OrderFact]]
) -> None:
    """Write back orders' state (with the member, where it was not known yet), one statement."""
    if not facts:
        return
    ids = sorted(facts)
    rows = [facts[i] for i in ids]
    await conn.execute(
        "UPDATE orders_fact o SET member_id = COALESCE(o.member_id, u.member_id), "
        "status = u.status, total = u.total, confirmed_at = u.confirmed_at, "
        "refunded = u.refunded, refunded_at = u.refunded_at, updated_at = now() "
        "FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::timestamptz[], "
        "$6::bigint[], $7::timestamptz[]) "
        "AS u(order_id, member_id, status, total, confirmed_at, refunded, refunded_at) "
        "WHERE o.order_id = u.order_id",
        ids, [m for m, _ in rows], [f.status for _, f in rows], [f.total for _, f in rows],
        [f.confirmed_at for _, f in rows], [f.refunded for _, f in rows],
        [f.refunded_at for _, f in rows],
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


def seconds_purge(keep: timedelta) -> Purge:
    """Per-second GMV older than `keep` (the per-minute buckets keep the history)."""
    return Purge("gmv_second", "second < now() - $2::interval", keep)
