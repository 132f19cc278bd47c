"""The points invariant: each member's points are the rule applied to their orders."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from services.membership.domain.points import points_earned
from services.membership.domain.tiers import tier_for_spend


async def check_points(conn: asyncpg.Connection):  # -> audit.Check (import cycle avoided)
    """Replays each member's ledger: earn = rule(total, tier before the order), and so on."""
    from services.cli.audit import Check

    orders = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, member_id, status, total, points_redeemed FROM orders.orders "
            "WHERE status IN ('CONFIRMED', 'REFUNDED')"
        )
    }
    ledger = await conn.fetch(
        "SELECT member_id, order_id, reason, delta FROM membership.points_ledger ORDER BY id"
    )
    members = await conn.fetch(
        "SELECT id, points_balance, lifetime_spend, tier FROM membership.members"
    )
    bad: list[str] = []
    by_member: dict[object, list[asyncpg.Record]] = defaultdict(list)
    for entry in ledger:
        by_member[entry["member_id"]].append(entry)
    confirmed_spend: dict[object, int] = defaultdict(int)
    for o in orders.values():
        if o["status"] == "CONFIRMED":
            confirmed_spend[o["member_id"]] += o["total"]
    for m in members:
        bad += _replay_member(m, by_member.get(m["id"], []), orders, confirmed_spend[m["id"]])
    earned = {(e["order_id"], e["reason"]) for e in ledger}
    for order_id, o in orders.items():
        if (order_id, "earn") not in earned and points_earned(o["total"], tier_for_spend(0)) > 0:
            bad.append(f"order {order_id} is {o['status']} but earned no points")
        if (
            o["status"] == "REFUNDED"
            and (order_id, "earn") in earned
            and (order_id, "reverse") not in earned
        ):
            bad.append(f"order {order_id} was refunded but its points were not reversed")
    return Check(
        "each member's points and tier follow the rules from their orders",
        len(members),
        bad,
        eventual=True,
    )


def _replay_member(
    member: asyncpg.Record,
    entries: list[asyncpg.Record],
    orders: dict[object, asyncpg.Record],
    confirmed_spend: int,
) -> list[str]:
    bad: list[str] = []
    spend = 0
    balance = 0
    earned_for: dict[object, int] = {}
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
            earned_for[e["order_id"]] = e["delta"]
            spend += order["total"]
        elif e["reason"] == "reverse":
            if e["delta"] != -earned_for.get(e["order_id"], 0):
                bad.append(
                    f"order {e['order_id']}: reversed {e['delta']} of "
                    f"{earned_for.get(e['order_id'], 0)} earned"
                )
            if order is not None:
                spend -= order["total"]
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
