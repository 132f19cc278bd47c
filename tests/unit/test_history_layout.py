"""How `marketplace history` splits a plan: the past older than retention as copies of a
block, each copy with members of its own, and the recent past simulated for all members."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.cli.history_clone import clone_id
from services.cli.history_model import Plan, Simulation, Sku, layout

UNTIL = datetime(2026, 12, 1, tzinfo=UTC)


def _plan(orders: int, members: int, days: float = 365) -> Plan:
    return Plan(orders=orders, members=members, seed=5, start=UNTIL - timedelta(days=days),
                until=UNTIL)


@pytest.mark.parametrize(("orders", "members", "block"), [
    (10_000_000, 500_000, 50_000), (1_000_000, 50_000, 50_000), (20_000, 1_000, 4_000),
    (1_000, 1, 50_000), (123_457, 6_173, 10_000)])
def test_the_layout_makes_exactly_the_plans_orders_and_members(
        orders: int, members: int, block: int) -> None:
    lay = layout(_plan(orders, members), UNTIL - timedelta(days=9), block=block)
    assert lay.block * lay.copies + lay.recent == orders
    assert 1 <= lay.copies <= members and lay.block <= block
    assert lay.block_members * lay.copies <= members
    # Orders spread evenly: the recent 9 days hold their share (the copies' rounding aside).
    assert lay.recent == pytest.approx(orders * 9 / 365, abs=lay.copies + 1)


def test_a_history_inside_retention_is_simulated_whole() -> None:
    lay = layout(_plan(5_000, 100, days=3), UNTIL - timedelta(days=9), block=1_000)
    assert (lay.copies, lay.block, lay.recent) == (1, 0, 5_000)


def test_the_copies_members_go_on_from_the_blocks_state() -> None:
    skus = [Sku(uuid.UUID(int=n + 1), uuid.UUID(int=100 + n), uuid.UUID(int=200), "toys",
                1_000 * (n + 1)) for n in range(5)]
    plan = _plan(2_000, 40)
    lay = layout(plan, UNTIL - timedelta(days=9), block=500)
    sim = Simulation(plan, skus, lay)
    first = sim.chunk(0, lay.block)
    assert first.copies == lay.copies == 4
    block_members = list(sim.members.ids)
    spend, balance = list(sim.members.spend), list(sim.members.balance)
    members = sim.all_members()
    assert len(members.ids) == plan.members
    n = len(block_members)
    for c in range(1, lay.copies):
        assert members.ids[c * n:(c + 1) * n] == [clone_id(m, c) for m in block_members]
        assert members.spend[c * n:(c + 1) * n] == spend
        assert members.balance[c * n:(c + 1) * n] == balance
    # What the block's rows add to counts for every copy; the rows themselves are copied.
    units = sum(x[6] for x in first.rows["orders.order_lines"])
    confirmed_units = sum(first.sold.values())
    assert 0 < confirmed_units <= units * lay.copies and confirmed_units % lay.copies == 0
    assert len(first.rows["orders.orders"]) == lay.block


def test_clone_id_keeps_the_block_and_gives_each_copy_its_own() -> None:
    of = uuid.UUID(int=42)
    assert clone_id(of, 0) == of
    assert len({clone_id(of, c) for c in range(100)}) == 100
