"""The points invariant: each member's points are the rule applied to their orders."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg

from services.cli.audit_window import Scope
from services.membership.domain.points import points_earned
from services.membership.domain.refunds import points_to_reverse
from services.membership.domain.tiers import tier_for_spend

# Every member with a ledger or a confirmed order, in id order (the full audit's batches).
_MEMBER_IDS = (
    "SELECT id FROM membership.members UNION "
    "SELECT member_id FROM orders.orders WHERE status IN ('CONFIRMED', 'REFUNDED') ORDER BY 1"
)
BATCH = 1_000


async def check_points(conn: asyncpg.Connection, scope: Scope | None = None):  # -> audit.Check
    """Replays each member's ledger: earn = rule(total, tier before the order), reversals in
    proportion to what orders records refunded, redeemed points back only on a full refund.
    Member by member, a batch at a time: the whole history streams; a window checks the
    members whose orders or points changed in it (each over all of their history)."""
    from services.cli.audit import Check

    scope = scope or Scope.whole()
    checked, bad = 0, list[str]()
    async for members in _member_batches(conn, scope):
        checked += await _check_members(conn, members, bad)
        scope.counted("members", checked, every=BATCH * 100)
    return Check(
        "each member's points and tier follow the rules from their orders",
        checked,
        bad,
        eventual=True,
    )


async def _member_batches(conn: asyncpg.Connection, scope: Scope) -> AsyncIterator[list]:
    if scope.members is not None:
        for i in range(0, len(scope.members), BATCH):
            yield scope.members[i:i + BATCH]
        return
    cursor = await conn.cursor(_MEMBER_IDS)
    while batch := [r["id"] for r in await cursor.fetch(BATCH)]:
        yield batch


async def _check_members(conn: asyncpg.Connection, ids: list, bad: list[str]) -> int:
    """Checks these members and their confirmed orders; returns how many members were known."""
    orders = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, member_id, status, total, refunded, points_redeemed FROM orders.orders "
            "WHERE member_id = ANY($1::uuid[]) AND status IN ('CONFIRMED', 'REFUNDED')", ids)
    }
    ledger = await conn.fetch(
        "SELECT member_id, order_id, reason, delta, refunded_total "
        "FROM membership.points_ledger WHERE member_id = ANY($1::uuid[]) ORDER BY id", ids)
    members = await conn.fetch(
        "SELECT id, points_balance, lifetime_spend, tier FROM membership.members "
        "WHERE id = ANY($1::uuid[])", ids)
    by_member: dict[object, list[asyncpg.Record]] = defaultdict(list)
    for entry in ledger:
        by_member[entry["member_id"]].append(entry)
    confirmed_spend: dict[object, int] = defaultdict(int)
    for o in orders.values():  # net of refunds: nothing is left of a REFUNDED order
        confirmed_spend[o["member_id"]] += o["total"] - o["refunded"]
    for m in members:
        bad += _replay_member(m, by_member.get(m["id"], []), orders, confirmed_spend[m["id"]])
    per_order: dict[tuple[object, str], int] = defaultdict(int)
    for e in ledger:
        per_order[e["order_id"], e["reason"]] += e["delta"]
    for order_id, o in orders.items():
        bad += _order_points(order_id, o, per_order)
    return len(members)


def _order_points(
    order_id: object, order: asyncpg.Record, per_order: dict[tuple[object, str], int]
) -> list[str]:
    """One order's reversals follow its refunds; its redeemed points return only in full."""
    bad: list[str] = []
    earned = per_order.get((order_id, "earn"))
    if earned is None and points_earned(order["total"], tier_for_spend(0)) > 0:
        bad.append(f"order {order_id} is {order['status']} but earned no points")
    reversed_ = -per_order.get((order_id, "reverse"), 0)
    due = points_to_reverse(points_earned=earned or 0, total=order["total"],
                            refunded=order["refunded"])
    if reversed_ != due:
        bad.append(
            f"order {order_id}: {reversed_} of {earned or 0} earned points reversed, but "
            f"{order['refunded']} of {order['total']} refunded takes back {due}"
        )
    redeemed = -per_order.get((order_id, "redeem"), 0)
    restored = per_order.get((order_id, "restore"), 0)
    expected = redeemed if order["status"] == "REFUNDED" else 0
    if restored != expected:
        bad.append(
            f"order {order_id} is {order['status']}: {restored} of {redeemed} redeemed points "
            f"restored, expected {expected}"
        )
    return bad


def _replay_member(
    member: asyncpg.Record,
    entries: list[asyncpg.Record],
    orders: dict[object, asyncpg.Record],
    confirmed_spend: int,
) -> list[str]:
    bad: list[str] = []
    spend = 0
    balance = 0
    # The order's running refund at its latest reversal: spend had dropped by that much then
    # (a refund too small to reverse a point is caught up at the next reversal).
    refunded_at_reversal: dict[object, int] = defaultdict(int)
    for e in entries:
        balance += e["delta"]
        order = orders.get(e["order_id"])
        if e["reason"] == "earn":
            if order is None:
                bad.append(f"points earned for order {e['order_id']} that is not confirmed")
                continue
            expected = points_earned(order["total"], tier_for_spend(spend))
            if e["delta"] != expected:
                bad.append(
                    f"order {e['order_id']}: earned {e['delta']} points, rule says "
                    f"{expected} (tier {tier_for_spend(spend)} before it)"
                )
            spend += order["total"]
        elif e["reason"] == "reverse" and order is not None:
            level = max(refunded_at_reversal[e["order_id"]], e["refunded_total"])
            spend -= level - refunded_at_reversal[e["order_id"]]
            refunded_at_reversal[e["order_id"]] = level
    if balance != member["points_balance"]:
        bad.append(
            f"member {member['id']}: balance {member['points_balance']} but the "
            f"ledger sums to {balance}"
        )
    if member["lifetime_spend"] != confirmed_spend:
        bad.append(
            f"member {member['id']}: lifetime spend {member['lifetime_spend']} but "
            f"confirmed orders total {confirmed_spend}"
        )
    if member["tier"] != tier_for_spend(member["lifetime_spend"]).value:
        bad.append(
            f"member {member['id']}: tier {member['tier']} does not match spend "
            f"{member['lifetime_spend']}"
        )
    return bad
