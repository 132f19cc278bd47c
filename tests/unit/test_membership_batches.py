"""Membership's batch path without I/O: runs of a batch, and a run's confirmations worked
out in memory order after order, as the per-event rules would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from marketplace.events.v1 import events_pb2 as ev

from services.common.events import Event
from services.membership.batch import runs
from services.membership.confirmations import Confirmation, Run
from services.membership.domain.points import points_earned
from services.membership.domain.standing import Standing, confirm
from services.membership.domain.tiers import Tier, tier_for_spend

CONFIRMED, REFUNDED = "orders.order.confirmed", "orders.order.refunded"
MEMBERS = [uuid.UUID(int=n) for n in (1, 2, 3)]
NEW = Standing(lifetime_spend=0, tier=Tier.BRONZE, points_balance=0)


def _event(subject: str) -> Event:
    return Event(id=uuid.uuid4(), subject=subject, data=b"", headers={})


def _order(member_id: uuid.UUID, total: int) -> Confirmation:
    return Confirmation(order_id=uuid.uuid4(), member_id=member_id, total=total,
                        confirmed_at=datetime(2025, 11, 11, tzinfo=UTC))


def test_a_batch_is_cut_into_runs_of_confirmations_and_the_others_in_order() -> None:
    subjects = [CONFIRMED, CONFIRMED, REFUNDED, CONFIRMED, REFUNDED, REFUNDED, CONFIRMED]
    events = [_event(s) for s in subjects]

    cut = runs(events)

    assert [(confirmed, len(run)) for confirmed, run in cut] == [
        (True, 2), (False, 1), (True, 1), (False, 2), (True, 1)]
    assert [e for _, run in cut for e in run] == events
    assert runs([]) == []


def test_the_order_that_lifts_a_member_earns_at_the_tier_before_it() -> None:
    lifted = confirm(Standing(lifetime_spend=900_000, tier=Tier.SILVER, points_balance=10),
                     200_000)

    assert (lifted.points, lifted.after.tier, lifted.tier_changed) == (2_000, Tier.GOLD, True)
    after = confirm(lifted.after, 200_000)
    assert (after.points, after.after.points_balance, after.tier_changed) == (
        3_000, 5_010, False)


def test_a_run_chains_each_members_balance_and_announces_each_change_in_order() -> None:
    climber, other = MEMBERS[:2]
    run = Run({climber: NEW, other: NEW})
    orders = [_order(climber, 150_000), _order(other, 50), _order(climber, 100_000),
              _order(climber, 800_000)]

    for order in orders:
        run.confirm(order)

    assert [(p.member_id, p.delta, p.balance_after) for p in run.postings] == [
        (climber, 1_500, 1_500), (climber, 1_000, 2_500), (climber, 8_000, 10_500)]
    assert [(o.tier_at_order, o.points_earned) for o in run.orders] == [
        ("BRONZE", 1_500), ("BRONZE", 0), ("BRONZE", 1_000), ("SILVER", 8_000)]
    assert run.standings == {
        climber: Standing(lifetime_spend=1_050_000, tier=Tier.GOLD, points_balance=10_500),
        other: Standing(lifetime_spend=50, tier=Tier.BRONZE, points_balance=0)}
    announced = [(e.subject, e.aggregate_id, _message(e.subject, e.payload))
                 for e in run.events]
    assert [(s, a) for s, a, _ in announced] == [
        ("membership.points.changed", str(climber)), ("membership.points.changed", str(climber)),
        ("membership.tier.changed", str(climber)), ("membership.points.changed", str(climber)),
        ("membership.tier.changed", str(climber))]
    points = [m for s, _, m in announced if s == "membership.points.changed"]
    assert [(m.delta, m.balance, m.reason, m.order_id) for m in points] == [
        (1_500, 1_500, "earn", str(orders[0].order_id)),
        (1_000, 2_500, "earn", str(orders[2].order_id)),
        (8_000, 10_500, "earn", str(orders[3].order_id))]
    tiers = [m for s, _, m in announced if s == "membership.tier.changed"]
    assert [(m.old_tier, m.new_tier) for m in tiers] == [("BRONZE", "SILVER"), ("SILVER", "GOLD")]
    assert len({e.event_id for e in run.events}) == len(run.events)


def _message(subject: str, payload: bytes) -> ev.PointsChanged | ev.TierChanged:
    message = ev.PointsChanged() if subject.endswith("points.changed") else ev.TierChanged()
    message.ParseFromString(payload)
    return message


@given(st.lists(st.tuples(st.sampled_from(MEMBERS), st.integers(0, 3_000_000)), max_size=30))
def test_a_run_ends_where_the_rules_applied_one_order_at_a_time_do(
    orders: list[tuple[uuid.UUID, int]],
) -> None:
    run = Run(dict.fromkeys(MEMBERS, NEW))
    spend = dict.fromkeys(MEMBERS, 0)
    balance = dict.fromkeys(MEMBERS, 0)

    for member_id, total in orders:
        run.confirm(_order(member_id, total))
        balance[member_id] += points_earned(total, tier_for_spend(spend[member_id]))
        spend[member_id] += total

    assert run.standings == {
        m: Standing(lifetime_spend=spend[m], tier=tier_for_spend(spend[m]),
                    points_balance=balance[m]) for m in MEMBERS}
    assert sum(p.delta for p in run.postings) == sum(balance.values())
