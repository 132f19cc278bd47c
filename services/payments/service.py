"""Authorize, capture, void and refund: idempotent, one locked transaction per move.

Every move writes the payment, its balanced journal entry, its event (outbox) and the
answer under its idempotency key in one transaction, so a replay returns the first answer
and money moves once. Anything that fails before the commit leaves nothing behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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


async def _earlier_authorization(
    conn: asyncpg.Connection, command: AuthorizePayment, request_hash: str
) -> pb.Payment | None:
    """The answer for this key, or this order's payment when the request is the same."""
    answer, existing = await store.answer_or_order_payment(
        conn, method="Authorize", key=command.key, order_id=command.order_id)
    if answer is not None:
        if answer.request_hash != request_hash:
            raise CommandError("invalid_argument", KEY_REUSED)
        return pb.Payment.FromString(answer.response)
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise CommandError(
            "already_exists",
            f"order {command.order_id} already has payment {existing.id} for a different request",
        )
    return to_proto(existing)


async def authorize(*, deps: Deps, command: AuthorizePayment) -> pb.Payment:
    """Ask the processor, then record the payment (FAILED with a decline code if declined).

    A sale (`command.capture_key` set) also captures an approved authorization in full, in
    the same transaction: both journal entries, one `payments.payment.captured` event, and
    the Capture answer under that key, so a later Capture with it replays instead of moving
    money again. When the processor cannot capture, the payment is recorded AUTHORIZED (and
    published as such) for a later Capture.
    """
    rules.authorized(command.amount)  # refuse a bad amount before the card is touched
    if command.currency != deps.currency:
        raise CommandError("invalid_argument", f"currency must be {deps.currency}")
    request_hash = command.fingerprint()
    async with deps.pool.acquire() as conn:
        earlier = await _earlier_authorization(conn, command, request_hash)
    if earlier is not None:
        return earlier
    # Keyed by order: however many keys the caller tries, the card is held once per order.
    result = await deps.gateway.authorize(
        token=command.token, amount=command.amount,
        idempotency_key=f"authorize:{command.order_id}",
    )
    captured = await _sale_capture(deps, command, result)
    for attempt in (1, 2):
        try:
            # A concurrent call for the same order or key loses on a unique index and
            # retries: then it finds the winner's answer (the first attempt just looked).
            async with deps.pool.acquire() as conn:
                earlier = (await _earlier_authorization(conn, command, request_hash)
                           if attempt == 2 else None)
                if earlier is not None:
                    return earlier
                if captured is not None:  # one statement, its own transaction
                    return await _record_sale(deps, conn, command, request_hash, result)
                async with conn.transaction():
                    change = await _new_payment(conn, command, request_hash, result)
                    return await _record(conn, method="Authorize", key=command.key,
                                         request_hash=request_hash, change=change)
        except asyncpg.UniqueViolationError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _record_sale(
    deps: Deps, conn: asyncpg.Connection, command: AuthorizePayment, request_hash: str,
    result: ProcessorResult,
) -> pb.Payment:
    """An authorization captured at once: the payment in its final state, both journal
    entries, one event (`captured` carries the whole payment: amount, captured, status),
    and the answer under both keys, all in one statement."""
    authorized = rules.authorized(command.amount)
    state = rules.capture(authorized, 0)
    # The row as it will be; the database adds seq and created_at, which neither the event
    # nor the answer carries.
    row = store.PaymentRow(
        id=uuid.uuid4(), seq=0, order_id=command.order_id, member_id=command.member_id,
        merchant_id=command.merchant_id, status=authorized.status, currency=command.currency,
        amount=authorized.amount, captured=authorized.captured, refunded=authorized.refunded,
        commission=0, decline_code=None, processor_ref=result.reference,
        request_hash=request_hash, created_at=datetime.now(UTC))
    change = _captured(deps, row, state)
    assert change.posting is not None
    answer = to_proto(change.row)
    capture = CapturePayment(key=command.capture_key, payment_id=row.id, amount=0)
    await store.insert_sale(
        conn, change.row, postings=[ledger.authorize(row.amount), change.posting],
        event=outbox.pending(source=SOURCE, subject=change.subject, aggregate_id=str(row.id),
                             message=_event(change.row)),
        answers=[("Authorize", command.key, request_hash),
                 ("Capture", capture.key, capture.fingerprint())],
        response=answer.SerializeToString())
    return answer


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


async def _new_payment(
    conn: asyncpg.Connection, command: AuthorizePayment, request_hash: str,
    result: ProcessorResult,
) -> Change:
    approved = result.approved
    state = rules.authorized(command.amount) if approved else rules.failed(command.amount)
    row = await store.insert(
        conn, order_id=command.order_id, member_id=command.member_id,
        merchant_id=command.merchant_id, state=state, currency=command.currency,
        decline_code=None if approved else (result.decline_code or "declined"),
        processor_ref=result.reference if approved else None, request_hash=request_hash,
    )
    if not approved:
        return Change(row, None, "payments.payment.failed")
    return Change(row, ledger.authorize(row.amount), "payments.payment.authorized")


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
