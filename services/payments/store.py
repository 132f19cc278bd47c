"""SQL for payments, idempotency keys and the ledger (asyncpg, the `payments` schema)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.common.outbox import Pending
from services.payments.domain.ledger import Posting, merchant_payable
from services.payments.domain.payment import PaymentState, PaymentStatus

_COLUMNS = (
    "id, seq, order_id, member_id, merchant_id, status, currency, amount, captured, refunded, "
    "commission, decline_code, processor_ref, request_hash, created_at"
)


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: uuid.UUID
    seq: int
    order_id: uuid.UUID
    member_id: uuid.UUID
    merchant_id: uuid.UUID
    status: PaymentStatus
    currency: str
    amount: int
    captured: int
    refunded: int
    commission: int
    decline_code: str | None
    processor_ref: str | None
    request_hash: str
    created_at: datetime

    @property
    def state(self) -> PaymentState:
        return PaymentState(self.status, self.amount, self.captured, self.refunded)

    def with_state(self, state: PaymentState, *, commission: int | None = None) -> PaymentRow:
        return replace(
            self, status=state.status, amount=state.amount, captured=state.captured,
            refunded=state.refunded,
            commission=self.commission if commission is None else commission,
        )


def _row(record: asyncpg.Record | None) -> PaymentRow | None:
    if record is None:
        return None
    return _row_from(dict(record))


def _row_from(values: dict[str, object]) -> PaymentRow:
    return PaymentRow(**{**values, "status": PaymentStatus(str(values["status"]))})  # type: ignore[arg-type]


async def get(conn: asyncpg.Connection, payment_id: uuid.UUID) -> PaymentRow | None:
    return _row(await conn.fetchrow(f"SELECT {_COLUMNS} FROM payments WHERE id = $1", payment_id))


async def get_for_update(conn: asyncpg.Connection, payment_id: uuid.UUID) -> PaymentRow | None:
    """The payment, locked until the transaction ends: its moves happen one at a time."""
    return _row(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments WHERE id = $1 FOR UPDATE", payment_id
    ))


async def get_by_order(conn: asyncpg.Connection, order_id: uuid.UUID) -> PaymentRow | None:
    return _row(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments WHERE order_id = $1", order_id
    ))


async def list_payments(
    conn: asyncpg.Connection, *, order_id: uuid.UUID | None = None,
    merchant_id: uuid.UUID | None = None, after_seq: int | None, limit: int,
) -> list[PaymentRow]:
    """Newest first, optionally of one order and/or one merchant; `after_seq` continues."""
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM payments "
        "WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR merchant_id = $2) "
        "AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
        order_id, merchant_id, after_seq, limit,
    )
    return [r for r in map(_row, records) if r is not None]


# $1 id, $2 order, $3 member, $4 merchant, $5 status, $6 currency, $7 amount, $8 captured,
# $9 refunded, $10 decline code, $11 processor ref, $12 request hash, $13 commission.
_INSERT = (
    "INSERT INTO payments (id, order_id, member_id, merchant_id, status, currency, amount, "
    "captured, refunded, decline_code, processor_ref, request_hash, commission) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    f"RETURNING {_COLUMNS}"
)


async def insert(
    conn: asyncpg.Connection, *, order_id: uuid.UUID, member_id: uuid.UUID,
    merchant_id: uuid.UUID, state: PaymentState, currency: str, decline_code: str | None,
    processor_ref: str | None, request_hash: str, commission: int = 0,
) -> PaymentRow:
    """A new payment; raises UniqueViolationError when the order already has one."""
    record = await conn.fetchrow(
        _INSERT, uuid.uuid4(), order_id, member_id, merchant_id, state.status.value, currency,
        state.amount, state.captured, state.refunded, decline_code, processor_ref, request_hash,
        commission,
    )
    row = _row(record)
    assert row is not None
    return row


async def update_amounts(conn: asyncpg.Connection, p: PaymentRow) -> None:
    await conn.execute(
        "UPDATE payments SET status = $2, captured = $3, refunded = $4, commission = $5, "
        "updated_at = now() WHERE id = $1",
        p.id, p.status.value, p.captured, p.refunded, p.commission,
    )


async def insert_refund(
    conn: asyncpg.Connection, *, payment_id: uuid.UUID, amount: int, reason: str
) -> None:
    await conn.execute(
        "INSERT INTO refunds (id, payment_id, amount, reason) VALUES ($1, $2, $3, $4)",
        uuid.uuid4(), payment_id, amount, reason,
    )


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    request_hash: str
    response: bytes


async def get_answer(conn: asyncpg.Connection, *, method: str, key: str) -> StoredAnswer | None:
    record = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE method = $1 AND key = $2",
        method, key,
    )
    if record is None:
        return None
    return StoredAnswer(record["request_hash"], bytes(record["response"]))


async def answer_or_order_payment(
    conn: asyncpg.Connection, *, method: str, key: str, order_id: uuid.UUID
) -> tuple[StoredAnswer | None, PaymentRow | None]:
    """The answer stored under (method, key) and the order's payment, in one round trip."""
    record = await conn.fetchrow(
        "SELECT k.request_hash AS answer_hash, k.response AS answer, "
        + ", ".join(f"p.{c.strip()}" for c in _COLUMNS.split(",")) + " "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN idempotency_keys k ON k.method = $1 AND k.key = $2 "
        "LEFT JOIN payments p ON p.order_id = $3",
        method, key, order_id,
    )
    assert record is not None  # one row, whatever matched
    answer = (StoredAnswer(record["answer_hash"], bytes(record["answer"]))
              if record["answer_hash"] is not None else None)
    payment = None
    if record["id"] is not None:
        values = {k: record[k] for k in PaymentRow.__slots__}
        payment = _row_from(values)
    return answer, payment


async def save_answer(
    conn: asyncpg.Connection, *, method: str, key: str, request_hash: str,
    payment_id: uuid.UUID, response: bytes,
) -> None:
    """Raises UniqueViolationError when a concurrent call with the same key won the race."""
    await save_answers(conn, [(method, key, request_hash)], payment_id=payment_id,
                       response=response)


async def save_answers(
    conn: asyncpg.Connection, keys: list[tuple[str, str, str]], *, payment_id: uuid.UUID,
    response: bytes,
) -> None:
    """One answer under several (method, key, request_hash), in one statement."""
    await conn.execute(
        "INSERT INTO idempotency_keys (method, key, request_hash, payment_id, response) "
        "SELECT m, k, h, $4, $5 FROM unnest($1::text[], $2::text[], $3::text[]) AS x(m, k, h)",
        [m for m, _, _ in keys], [k for _, k, _ in keys], [h for _, _, h in keys],
        payment_id, response,
    )


async def post(
    conn: asyncpg.Connection, *, payment_id: uuid.UUID, currency: str, posting: Posting
) -> int:
    """Write one journal entry with its lines, in one statement; the database refuses it
    unless it balances."""
    [entry_id] = await post_all(conn, payment_id=payment_id, currency=currency,
                                postings=[posting])
    return entry_id


async def post_all(
    conn: asyncpg.Connection, *, payment_id: uuid.UUID, currency: str,
    postings: Sequence[Posting],
) -> list[int]:
    """Write journal entries (of distinct kinds, in this order) with their lines, in one
    statement; the database refuses it unless each entry balances."""
    kinds = [p.kind for p in postings]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"one statement posts entries of distinct kinds, not {kinds}")
    lines = [(p.kind, account, amount) for p in postings for account, amount in p.lines]
    rows = await conn.fetch(
        "WITH e AS (INSERT INTO journal_entries (payment_id, kind, currency) "
        "SELECT $1, k.kind, $3 FROM unnest($2::text[]) WITH ORDINALITY AS k(kind, n) "
        "ORDER BY k.n RETURNING id, kind) "
        "INSERT INTO journal_lines (entry_id, account, amount) "
        "SELECT e.id, l.account, l.amount FROM e "
        "JOIN unnest($4::text[], $5::text[], $6::bigint[]) AS l(kind, account, amount) "
        "ON l.kind = e.kind RETURNING entry_id",
        payment_id, kinds, currency, [k for k, _, _ in lines], [a for _, a, _ in lines],
        [n for _, _, n in lines],
    )
    return sorted({r["entry_id"] for r in rows})


# A sale as one statement (so one round trip, and no BEGIN/COMMIT of its own): the payment,
# its journal entries with their lines, its event and its answer under every key. The
# deferred balance triggers run at the statement's commit; a second payment for the order
# or a key already answered fails all of it on a unique index.
_SALE = f"""
WITH p AS (
    {_INSERT}
), e AS (
    INSERT INTO journal_entries (payment_id, kind, currency)
    SELECT p.id, k.kind, p.currency FROM p, unnest($14::text[]) WITH ORDINALITY AS k(kind, n)
    ORDER BY k.n RETURNING id, kind
), l AS (
    INSERT INTO journal_lines (entry_id, account, amount)
    SELECT e.id, l.account, l.amount FROM e
    JOIN unnest($15::text[], $16::text[], $17::bigint[]) AS l(kind, account, amount)
      ON l.kind = e.kind
    RETURNING entry_id
), o AS (
    INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers)
    SELECT $18::uuid, $19::text, $20::text, $21::bytea, $22::jsonb FROM p
    RETURNING 1
), a AS (
    INSERT INTO idempotency_keys (method, key, request_hash, payment_id, response)
    SELECT x.m, x.k, x.h, p.id, $26::bytea FROM p,
        unnest($23::text[], $24::text[], $25::text[]) AS x(m, k, h)
    RETURNING 1
)
SELECT * FROM p
"""


async def insert_sale(
    conn: asyncpg.Connection, payment: PaymentRow, *, postings: Sequence[Posting],
    event: Pending, answers: Sequence[tuple[str, str, str]], response: bytes,
) -> PaymentRow:
    """Record a sale in one statement: `payment` (its id, state and amounts; the database
    gives it `seq` and `created_at`), `postings` (distinct kinds, in order), `event` and
    `response` under each (method, key, request_hash) of `answers`.

    Raises UniqueViolationError when the order already has a payment or a key an answer.
    """
    kinds = [x.kind for x in postings]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"one statement posts entries of distinct kinds, not {kinds}")
    lines = [(x.kind, account, amount) for x in postings for account, amount in x.lines]
    p = payment
    record = await conn.fetchrow(
        _SALE, p.id, p.order_id, p.member_id, p.merchant_id, p.status.value, p.currency,
        p.amount, p.captured, p.refunded, p.decline_code, p.processor_ref, p.request_hash,
        p.commission, kinds, [k for k, _, _ in lines], [a for _, a, _ in lines],
        [n for _, _, n in lines], event.event_id, event.subject, event.aggregate_id,
        event.payload, event.headers, [m for m, _, _ in answers], [k for _, k, _ in answers],
        [h for _, _, h in answers], response,
    )
    row = _row(record)
    assert row is not None
    return row


_BALANCE = (
    "SELECT coalesce(sum(l.amount), 0) FROM journal_lines l "
    "JOIN journal_entries e ON e.id = l.entry_id WHERE l.account = $1 AND e.currency = $2"
)
# A merchant payments knows: announced by orders' events, or named by a payment (the
# event may not have arrived yet). Both are index look-ups.
_KNOWN_MERCHANT = (
    "EXISTS (SELECT 1 FROM merchants WHERE id = $3) "
    "OR EXISTS (SELECT 1 FROM payments WHERE merchant_id = $3)"
)


async def account_balance(conn: asyncpg.Connection, *, account: str, currency: str) -> int:
    return int(await conn.fetchval(_BALANCE, account, currency))


async def merchant_balance(
    conn: asyncpg.Connection, *, merchant_id: uuid.UUID, currency: str
) -> int | None:
    """What the platform owes the merchant; None for a merchant payments does not know."""
    row = await conn.fetchrow(
        f"SELECT ({_BALANCE}) AS balance, {_KNOWN_MERCHANT} AS known",
        merchant_payable(merchant_id), currency, merchant_id,
    )
    return int(row["balance"]) if row["known"] else None
