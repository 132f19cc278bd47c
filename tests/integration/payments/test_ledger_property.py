"""Property: any sequence of moves keeps every journal entry balanced and never over-refunds.

The moves run through the service layer against the real store (Postgres, the payments
role); a pure model built from the domain rules predicts which moves must succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import db as common_db
from services.common.migrations import migrate
from services.payments import service
from services.payments.breaker import CircuitBreaker
from services.payments.commands import (
    AuthorizePayment,
    CapturePayment,
    CommandError,
    RefundPayment,
    VoidPayment,
)
from services.payments.domain import payment as rules
from services.payments.domain.payment import PaymentRuleError, PaymentState
from services.payments.gateway import ProcessorGateway
from services.payments.processor import SimulatedProcessor
from tests.infra import FreshDb

SERVICE_DIR = Path(service.__file__).parent


@dataclass(frozen=True)
class Authorize:
    amount: int
    approve: bool


@dataclass(frozen=True)
class Capture:
    target: int
    permille: int  # of the authorized amount; 0 captures everything


@dataclass(frozen=True)
class Void:
    target: int


@dataclass(frozen=True)
class Refund:
    target: int
    permille: int  # of the authorized amount; 0 refunds what remains


Op = Authorize | Capture | Void | Refund


@st.composite
def scripts(draw: st.DrawFn) -> list[Op]:
    """A few payments, then moves on them: mostly plausible, sometimes beyond the rules."""
    n = draw(st.integers(min_value=1, max_value=3))
    script: list[Op] = [
        Authorize(draw(st.integers(1, 20_000)), draw(st.sampled_from([True, True, True, False])))
        for _ in range(n)
    ]
    target = st.integers(0, n - 1)
    move = st.one_of(
        st.builds(Capture, target, st.one_of(st.just(0), st.integers(1, 1_100))),
        st.builds(Void, target),
        *[st.builds(Refund, target, st.one_of(st.just(0), st.integers(1, 600)))] * 3,
    )
    return script + draw(st.lists(move, max_size=12))


@pytest.fixture
async def deps(fresh_db: Callable[..., Awaitable[FreshDb]]) -> AsyncIterator[service.Deps]:
    db = await fresh_db("payments")
    pool = await common_db.create_pool(
        db.dsn("payments"), schema="payments", application_name="payments-property"
    )
    async with pool.acquire() as conn:
        await migrate(conn, schema="payments", service_dir=SERVICE_DIR)
    breaker = CircuitBreaker(window_s=30, minimum_calls=20, failure_rate=0.5, reset_after_s=10)
    gateway = ProcessorGateway(SimulatedProcessor(), breaker, timeout_s=5)
    yield service.Deps(pool=pool, gateway=gateway, currency="CNY", commission_bps=500)
    await pool.close()


def _predict(state: PaymentState, op: Op) -> PaymentState | None:
    """The state the domain rules allow after `op`, or None if they refuse it."""
    try:
        if isinstance(op, Capture):
            return rules.capture(state, _amount(state, op.permille))
        if isinstance(op, Void):
            return rules.void(state)
        if isinstance(op, Refund):
            return rules.refund(state, _amount(state, op.permille))
    except PaymentRuleError:
        return None
    raise AssertionError(op)


def _amount(state: PaymentState, permille: int) -> int:
    return 0 if permille == 0 else max(1, state.amount * permille // 1_000)


async def _apply(
    deps: service.Deps, payment_id: uuid.UUID, state: PaymentState, op: Op, key: str
) -> object:
    if isinstance(op, Capture):
        amount = _amount(state, op.permille)
        capture = CapturePayment(key=key, payment_id=payment_id, amount=amount)
        return await service.capture(deps=deps, command=capture)
    if isinstance(op, Void):
        return await service.void(deps=deps, command=VoidPayment(key=key, payment_id=payment_id))
    assert isinstance(op, Refund)
    return await service.refund(deps=deps, command=RefundPayment(
        key=key, payment_id=payment_id, amount=_amount(state, op.permille), reason="property"))


async def _check_ledger(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> None:
    """Invariants over this example's payments (the database is shared by all examples)."""
    unbalanced = await conn.fetch(
        "SELECT e.id FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id "
        "WHERE e.payment_id = ANY($1::uuid[]) "
        "GROUP BY e.id HAVING sum(l.amount) <> 0 OR count(*) < 2", ids,
    )
    assert unbalanced == []
    # Per payment: what merchant and platform hold is exactly what was captured, less refunds.
    mismatched = await conn.fetch(
        "SELECT p.id FROM payments p "
        "LEFT JOIN journal_entries e ON e.payment_id = p.id "
        "LEFT JOIN journal_lines l ON l.entry_id = e.id "
        "WHERE p.id = ANY($1::uuid[]) "
        "GROUP BY p.id, p.captured, p.refunded, p.amount, p.status, p.commission "
        "HAVING p.refunded > p.captured "
        "OR coalesce(sum(l.amount) FILTER (WHERE l.account LIKE 'merchant_payable:%' "
        "   OR l.account = 'platform_commission'), 0) <> p.captured - p.refunded "
        "OR coalesce(sum(l.amount) FILTER (WHERE l.account = 'refunds'), 0) <> p.refunded "
        # The platform keeps its commission less the share refunded, rounded down.
        "OR coalesce(sum(l.amount) FILTER (WHERE l.account = 'platform_commission'), 0) "
        "   <> p.commission - CASE WHEN p.captured = 0 THEN 0 "
        "                          ELSE p.commission * p.refunded / p.captured END "
        "OR coalesce(sum(l.amount) FILTER (WHERE l.account = 'authorized_holds'), 0) "
        "   <> CASE WHEN p.status = 'AUTHORIZED' THEN p.amount ELSE 0 END", ids,
    )
    assert mismatched == []
    # Commission is 5% of each capture, rounded down.
    wrong = await conn.fetch(
        "SELECT id FROM payments WHERE id = ANY($1::uuid[]) "
        "AND commission <> captured * 500 / 10000", ids,
    )
    assert wrong == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=scripts())
async def test_any_sequence_of_moves_keeps_the_ledger_balanced(
    deps: service.Deps, script: list[Op]
) -> None:
    payments: list[tuple[uuid.UUID, PaymentState]] = []
    for step, op in enumerate(script):
        key = f"{uuid.uuid4()}-{step}"
        if isinstance(op, Authorize):
            answer = await service.authorize(deps=deps, command=AuthorizePayment(
                key=key, order_id=uuid.uuid4(), member_id=uuid.uuid4(),
                merchant_id=uuid.uuid4(), amount=op.amount, currency="CNY",
                token="tok_visa" if op.approve else "tok_chargeDeclined",
            ))
            state = rules.authorized(op.amount) if op.approve else rules.failed(op.amount)
            payments.append((uuid.UUID(answer.id), state))
            continue
        payment_id, state = payments[op.target]
        expected = _predict(state, op)
        try:
            answer = await _apply(deps, payment_id, state, op, key)
        except (PaymentRuleError, CommandError):
            assert expected is None, f"{op} refused on {state}"
            continue
        assert expected is not None, f"{op} accepted on {state}"
        assert (answer.captured, answer.refunded) == (  # type: ignore[attr-defined]
            expected.captured, expected.refunded)
        payments[op.target] = (payment_id, expected)
    async with deps.pool.acquire() as conn:
        await _check_ledger(conn, [payment_id for payment_id, _ in payments])
