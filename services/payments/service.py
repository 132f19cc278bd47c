"""Authorize, capture, void and refund: idempotent, one locked transaction per move.

Every move writes the payment, its balanced journal entry, its event (outbox) and the
answer under its idempotency key in one transaction, so a replay returns the first answer
and money moves once. Anything that fails before the commit leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1 import money_pb2
from marketplace.events.v1 import events_pb2
from marketplace.payments.v1 import payments_pb2 as pb

from services.common import outbox
from services.payments import store
from services.payments.commands import (
    KEY_REUSED,
    AuthorizePayment,
    CapturePayment,
    CommandError,
    RefundPayment,
    VoidPayment,
)
from services.payments.domain import ledger
from services.payments.domain import payment as rules
from services.payments.gateway import ProcessorGateway
from services.payments.processor import ProcessorResult, ProcessorUnavailable
from services.payments.store import PaymentRow

log = logging.getLogger(__name__)

SOURCE = "payments"


@dataclass(frozen=True, slots=True)
class Deps:
    pool: asyncpg.Pool
    gateway: ProcessorGateway
    currency: str
    commission_bps: int


@dataclass(frozen=True, slots=True)
class Change:
    """What a move did: the new payment row, its journal entry and its event subject."""

    row: PaymentRow
    posting: ledger.Posting | None
    subject: str


Move = Callable[[asyncpg.Connection, PaymentRow], Awaitable[Change]]


def to_proto(p: PaymentRow) -> pb.Payment:
    return pb.Payment(
        id=str(p.id), order_id=str(p.order_id), member_id=str(p.member_id),
        status=pb.PaymentStatus.Value(f"PAYMENT_STATUS_{p.status.value}"),
        amount=money_pb2.Money(amount=p.amount, currency=p.currency),
        captured=p.captured, refunded=p.refunded, decline_code=p.decline_code or "",
    )


def _event(p: PaymentRow) -> events_pb2.PaymentChanged:
    occurred_at = Timestamp()
    occurred_at.GetCurrentTime()
    return events_pb2.PaymentChanged(
        payment_id=str(p.id), order_id=str(p.order_id), member_id=str(p.member_id),
        status=p.status.value, amount=money_pb2.Money(amount=p.amount, currency=p.currency),
        captured=p.captured, refunded=p.refunded, decline_code=p.decline_code or "",
        occurred_at=occurred_at,
    )


async def _record(
    conn: asyncpg.Connection, *, method: str, key: str, request_hash: str, change: Change
) -> pb.Payment:
    """The journal entry, the event and the answer, in the caller's transaction."""
    p = change.row
    await _record_change(conn, change)
    answer = to_proto(p)
    await store.save_answer(
        conn, method=method, key=key, request_hash=request_hash, payment_id=p.id,
        response=answer.SerializeToString(),
    )
    return answer


async def _record_change(conn: asyncpg.Connection, change: Change) -> None:
    """The journal entry and the event of one move, in the caller's transaction."""
    p = change.row
    if change.posting is not None:
        await store.post(conn, payment_id=p.id, currency=p.currency, posting=change.posting)
    await _record_event(conn, change)


async def _record_event(conn: asyncpg.Connection, change: Change) -> None:
    p = change.row
    await outbox.add_event(
        conn, source=SOURCE, subject=change.subject, aggregate_id=str(p.id), message=_event(p)
    )


async def _replay(
    conn: asyncpg.Connection, *, method: str, key: str, request_hash: str
) -> pb.Payment | None:
    answer = await store.get_answer(conn, method=method, key=key)
    if answer is None:
        return None
    if answer.request_hash != request_hash:
        raise CommandError("invalid_argument", KEY_REUSED)
    return pb.Payment.FromString(answer.response)


# An item's payment, or the refusal its own Authorize would raise.
Answer: TypeAlias = "pb.Payment | Exception"


async def authorize(*, deps: Deps, command: AuthorizePayment) -> pb.Payment:
    """One authorization: a batch of one (see `authorize_batch`)."""
    [answer] = await authorize_batch(deps=deps, commands=[command])
    if isinstance(answer, Exception):
        raise answer
    return answer


async def authorize_batch(
    *, deps: Deps, commands: Sequence[AuthorizePayment], budget_s: float | None = None
) -> list[Answer]:
    """Ask the processor for each payment (concurrently), then record them all in one
    statement (FAILED with a decline code if declined); each gets its own answer.

    A sale (`capture_key` set) also captures an approved authorization in full: both
    journal entries, one `payments.payment.captured` event, and the Capture answer under
    that key, so a later Capture with it replays instead of moving money again. When the
    processor cannot capture, the payment is recorded AUTHORIZED for a later Capture. An
    item the processor has not answered within `budget_s` is answered ProcessorUnavailable.
    """
    hashes = [c.fingerprint() for c in commands]
    answers: list[Answer | None] = [_refusal(deps, c) for c in commands]
    await _earlier(deps, commands, hashes, answers)
    todo = [i for i, a in enumerate(answers) if a is None]
    charged = await _charge_all(deps, [commands[i] for i in todo], budget_s)
    fresh: list[tuple[int, store.NewPayment]] = []
    for i, result in zip(todo, charged, strict=True):
        if isinstance(result, Exception):
            answers[i] = result
        else:
            fresh.append((i, _new_payment(deps, commands[i], hashes[i], *result)))
    await _record_new(deps, fresh, answers, commands, hashes)
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def _refusal(deps: Deps, command: AuthorizePayment) -> Exception | None:
    """A bad amount or currency, refused before the card is touched."""
    try:
        rules.authorized(command.amount)
    except rules.PaymentRuleError as exc:
        return exc
    if command.currency != deps.currency:
        return CommandError("invalid_argument", f"currency must be {deps.currency}")
    return None


async def _earlier(
    deps: Deps, commands: Sequence[AuthorizePayment], hashes: Sequence[str],
    answers: list[Answer | None],
) -> None:
    """Fill in the answers already given: under the key, or the order's payment when the
    request is the same (one round trip for the batch)."""
    open_ = [i for i, a in enumerate(answers) if a is None]
    if not open_:
        return
    async with deps.pool.acquire() as conn:
        found = await store.answers_or_order_payments(
            conn, method="Authorize",
            requests=[(commands[i].key, commands[i].order_id) for i in open_])
    for i, (answer, existing) in zip(open_, found, strict=True):
        answers[i] = _earlier_answer(commands[i], hashes[i], answer, existing)


def _earlier_answer(
    command: AuthorizePayment, request_hash: str, answer: store.StoredAnswer | None,
    existing: PaymentRow | None,
) -> Answer | None:
    if answer is not None:
        if answer.request_hash != request_hash:
            return CommandError("invalid_argument", KEY_REUSED)
        return pb.Payment.FromString(answer.response)
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        return CommandError(
            "already_exists",
            f"order {command.order_id} already has payment {existing.id} for a different request",
        )
    return to_proto(existing)


async def _charge_all(
    deps: Deps, commands: Sequence[AuthorizePayment], budget_s: float | None
) -> list[tuple[ProcessorResult, bool] | Exception]:
    """The processor's answers, asked side by side; past `budget_s`, ProcessorUnavailable."""
    tasks = [asyncio.ensure_future(_charge(deps, c)) for c in commands]
    if not tasks:
        return []
    _, late = await asyncio.wait(tasks, timeout=budget_s)
    for task in late:
        task.cancel()
    results: list[tuple[ProcessorResult, bool] | Exception] = []
    for task in tasks:
        if task in late:
            results.append(ProcessorUnavailable(
                "the card processor did not answer within the call's deadline; "
                "retry with the same idempotency key"))
        elif isinstance(task.exception(), ProcessorUnavailable):
            results.append(task.exception())  # type: ignore[arg-type]
        else:
            results.append(task.result())
    return results


async def _charge(deps: Deps, command: AuthorizePayment) -> tuple[ProcessorResult, bool]:
    # Keyed by order: however many keys the caller tries, the card is held once per order.
    result = await deps.gateway.authorize(
        token=command.token, amount=command.amount,
        idempotency_key=f"authorize:{command.order_id}",
    )
    return result, await _sale_capture(deps, command, result) is not None


def _new_payment(
    deps: Deps, command: AuthorizePayment, request_hash: str, result: ProcessorResult,
    captured: bool,
) -> store.NewPayment:
    """The payment as the processor left it: CAPTURED (a sale), AUTHORIZED or FAILED."""
    approved = result.approved
    state = rules.authorized(command.amount) if approved else rules.failed(command.amount)
    row = store.PaymentRow(
        id=uuid.uuid4(), seq=0, order_id=command.order_id, member_id=command.member_id,
        merchant_id=command.merchant_id, status=state.status, currency=command.currency,
        amount=state.amount, captured=state.captured, refunded=state.refunded, commission=0,
        decline_code=None if approved else (result.decline_code or "declined"),
        processor_ref=result.reference if approved else None, request_hash=request_hash,
        created_at=datetime.now(UTC))
    answers = [("Authorize", command.key, request_hash)]
    if not approved:
        change = Change(row, None, "payments.payment.failed")
    elif captured:
        change = _captured(deps, row, rules.capture(state, 0))
        capture = CapturePayment(key=command.capture_key, payment_id=row.id, amount=0)
        answers.append(("Capture", capture.key, capture.fingerprint()))
    else:
        change = Change(row, None, "payments.payment.authorized")
    postings = ([ledger.authorize(row.amount)] if approved else []) + (
        [change.posting] if change.posting is not None else [])
    return store.NewPayment(
        row=change.row, postings=postings, answers=answers,
        event=outbox.pending(source=SOURCE, subject=change.subject,
                             aggregate_id=str(row.id), message=_event(change.row)),
        response=to_proto(change.row).SerializeToString())


async def _sale_capture(
    deps: Deps, command: AuthorizePayment, result: ProcessorResult
) -> ProcessorResult | None:
    """For a sale, capture an approved authorization at the processor; None: capture later."""
    if not command.capture_key or not result.approved:
        return None
    try:
        captured = await deps.gateway.capture(
            reference=result.reference or "", amount=command.amount,
            idempotency_key=command.capture_key,
        )
    except ProcessorUnavailable as exc:
        log.warning("sale captured later: the processor did not answer the capture",
                    extra={"order_id": str(command.order_id), "error": str(exc)})
        return None
    if not captured.approved:
        log.warning("sale captured later: the processor declined the capture",
                    extra={"order_id": str(command.order_id),
                           "decline_code": captured.decline_code})
        return None
    return captured


async def _record_new(
    deps: Deps, fresh: Sequence[tuple[int, store.NewPayment]], answers: list[Answer | None],
    commands: Sequence[AuthorizePayment], hashes: Sequence[str],
) -> None:
    """Record the new payments in one statement. If one of them lost a race (a concurrent
    call for the same order or key), each is recorded on its own, and the losers answer
    with the winner's answer."""
    if not fresh:
        return
    try:
        async with deps.pool.acquire() as conn:
            await store.insert_payments(conn, [p for _, p in fresh])
    except asyncpg.UniqueViolationError:
        if len(fresh) == 1:
            i = fresh[0][0]
            slot: list[Answer | None] = [None]
            await _earlier(deps, [commands[i]], [hashes[i]], slot)
            answers[i] = slot[0] or CommandError("unavailable", "payment being recorded")
            return
        for one in fresh:
            await _record_new(deps, [one], answers, commands, hashes)
        return
    for i, payment in fresh:
        answers[i] = pb.Payment.FromString(payment.response)


async def _move(
    *, deps: Deps, method: str, key: str, request_hash: str, payment_id: uuid.UUID, move: Move
) -> pb.Payment:
    """Lock the payment, replay or apply `move`, and record it, in one transaction."""
    for attempt in (1, 2):
        try:
            async with deps.pool.acquire() as conn, conn.transaction():
                row = await store.get_for_update(conn, payment_id)
                if row is None:
                    raise CommandError("not_found", f"payment {payment_id} not found")
                answer = await _replay(conn, method=method, key=key, request_hash=request_hash)
                if answer is not None:
                    return answer
                change = await move(conn, row)
                await store.update_amounts(conn, change.row)
                return await _record(
                    conn, method=method, key=key, request_hash=request_hash, change=change
                )
        except asyncpg.UniqueViolationError:
            # The same key raced in on another payment; the retry answers "key reused".
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _approved(result: ProcessorResult, what: str) -> None:
    if not result.approved:
        raise CommandError(
            "failed_precondition", f"the card processor declined the {what}: {result.decline_code}"
        )


def _captured(deps: Deps, row: PaymentRow, state: rules.PaymentState) -> Change:
    """The capture move once the processor took the money: commission and journal entry."""
    commission = ledger.commission_on(state.captured, deps.commission_bps)
    posting = ledger.capture(
        authorized=row.amount, captured=state.captured, commission=commission,
        merchant_id=row.merchant_id,
    )
    return Change(row.with_state(state, commission=commission), posting,
                  "payments.payment.captured")


async def capture(*, deps: Deps, command: CapturePayment) -> pb.Payment:
    async def move(conn: asyncpg.Connection, row: PaymentRow) -> Change:
        state = rules.capture(row.state, command.amount)
        _approved(await deps.gateway.capture(
            reference=row.processor_ref or "", amount=state.captured, idempotency_key=command.key,
        ), "capture")
        return _captured(deps, row, state)

    return await _move(deps=deps, method="Capture", key=command.key,
                       request_hash=command.fingerprint(), payment_id=command.payment_id,
                       move=move)


async def void(*, deps: Deps, command: VoidPayment) -> pb.Payment:
    async def move(conn: asyncpg.Connection, row: PaymentRow) -> Change:
        state = rules.void(row.state)
        _approved(await deps.gateway.void(
            reference=row.processor_ref or "", idempotency_key=command.key,
        ), "void")
        return Change(row.with_state(state), ledger.void(row.amount), "payments.payment.voided")

    return await _move(deps=deps, method="Void", key=command.key,
                       request_hash=command.fingerprint(), payment_id=command.payment_id,
                       move=move)


async def refund(*, deps: Deps, command: RefundPayment) -> pb.Payment:
    async def move(conn: asyncpg.Connection, row: PaymentRow) -> Change:
        state = rules.refund(row.state, command.amount)
        amount = state.refunded - row.refunded
        _approved(await deps.gateway.refund(
            reference=row.processor_ref or "", amount=amount, idempotency_key=command.key,
        ), "refund")
        await store.insert_refund(conn, payment_id=row.id, amount=amount, reason=command.reason)
        posting = ledger.refund(
            captured=row.captured, commission=row.commission, refunded_before=row.refunded,
            amount=amount, merchant_id=row.merchant_id,
        )
        return Change(row.with_state(state), posting, "payments.payment.refunded")

    return await _move(deps=deps, method="Refund", key=command.key,
                       request_hash=command.fingerprint(), payment_id=command.payment_id,
                       move=move)
