"""SQL for payments, idempotency keys and the ledger (asyncpg, the `payments` schema)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg

from services.common import outbox
from services.common.outbox import Pending
from services.common.purge import Purge
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


async def answers_or_order_payments(
    conn: asyncpg.Connection, *, method: str, requests: Sequence[tuple[str, uuid.UUID]]
) -> list[tuple[StoredAnswer | None, PaymentRow | None]]:
    """For each (key, order id): the answer stored under (method, key) and the order's
    payment, all in one round trip, in the order asked."""
    records = await conn.fetch(
        "SELECT k.request_hash AS answer_hash, k.response AS answer, "
        + ", ".join(f"p.{c.strip()}" for c in _COLUMNS.split(",")) + " "
        "FROM unnest($2::text[], $3::uuid[]) WITH ORDINALITY AS x(key, order_id, n) "
        "LEFT JOIN idempotency_keys k ON k.method = $1 AND k.key = x.key "
        "LEFT JOIN payments p ON p.order_id = x.order_id ORDER BY x.n",
        method, [k for k, _ in requests], [o for _, o in requests],
    )
    found: list[tuple[StoredAnswer | None, PaymentRow | None]] = []
    for record in records:
        answer = (StoredAnswer(record["answer_hash"], bytes(record["answer"]))
                  if record["answer_hash"] is not None else None)
        payment = (_row_from({k: record[k] for k in PaymentRow.__slots__})
                   if record["id"] is not None else None)
        found.append((answer, payment))
    return found


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


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment as it is recorded: its row (the database adds `seq` and `created_at`),
    its journal entries (distinct kinds, in order), its event, and its answer under each
    (method, key, request_hash) of `answers`."""

    row: PaymentRow
    postings: Sequence[Posting]
    event: Pending
    answers: Sequence[tuple[str, str, str]]
    response: bytes


_INSERT_COLUMNS = ("id, order_id, member_id, merchant_id, status, currency, amount, captured, "
                   "refunded, decline_code, processor_ref, request_hash, commission")

# New payments as one statement (one round trip, no BEGIN/COMMIT of its own): the payments,
# their journal entries with their lines, their events and answers. Inserted in order id
# order, so two statements racing on one order wait in one order. The deferred balance
# triggers run at the statement's commit; a second payment for an order or a key already
# answered fails all of it on a unique index.
_INSERT_MANY = f"""
WITH p AS (
    INSERT INTO payments ({_INSERT_COLUMNS})
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
        $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
        $12::text[], $13::bigint[]) AS x({_INSERT_COLUMNS})
    ORDER BY x.order_id
    RETURNING {_COLUMNS}
), e AS (
    INSERT INTO journal_entries (payment_id, kind, currency)
    SELECT p.id, k.kind, p.currency
    FROM unnest($14::uuid[], $15::text[]) WITH ORDINALITY AS k(payment_id, kind, n)
    JOIN p ON p.id = k.payment_id ORDER BY k.n
    RETURNING id, payment_id, kind
), l AS (
    INSERT INTO journal_lines (entry_id, account, amount)
    SELECT e.id, y.account, y.amount FROM e
    JOIN unnest($16::uuid[], $17::text[], $18::text[], $19::bigint[])
        AS y(payment_id, kind, account, amount)
      ON y.payment_id = e.payment_id AND y.kind = e.kind
    RETURNING entry_id
), o AS (
    {outbox.insert_sql(f"SELECT {outbox.COLUMNS} FROM {outbox.unnest_sql(20)} ORDER BY n")}
    RETURNING 1
), a AS (
    INSERT INTO idempotency_keys (method, key, request_hash, payment_id, response)
    SELECT * FROM unnest($25::text[], $26::text[], $27::text[], $28::uuid[], $29::bytea[])
    RETURNING 1
)
SELECT * FROM p
"""


def _insert_arguments(payments: Sequence[NewPayment]) -> list[object]:
    rows = [x.row for x in payments]
    entries = [(x.row.id, posting) for x in payments for posting in x.postings]
    for x in payments:
        kinds = [posting.kind for posting in x.postings]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"one payment posts entries of distinct kinds, not {kinds}")
    lines = [(pid, posting.kind, account, amount) for pid, posting in entries
             for account, amount in posting.lines]
    answers = [(x.row.id, x.response, *answer) for x in payments for answer in x.answers]
    columns = [c.strip() for c in _INSERT_COLUMNS.split(",")]
    return [
        *([getattr(r, c).value if c == "status" else getattr(r, c) for r in rows]
          for c in columns),
        [pid for pid, _ in entries], [posting.kind for _, posting in entries],
        *([line[i] for line in lines] for i in range(4)),
        *outbox.arrays([x.event for x in payments]),
        [a[2] for a in answers], [a[3] for a in answers], [a[4] for a in answers],
        [a[0] for a in answers], [a[1] for a in answers],
    ]


async def insert_payments(
    conn: asyncpg.Connection, payments: Sequence[NewPayment]
) -> list[PaymentRow]:
    """Record new payments in one statement; raises UniqueViolationError (and records
    none) when an order already has a payment or a key an answer."""
    records = await conn.fetch(_INSERT_MANY, *_insert_arguments(payments))
    by_id = {r["id"]: r for r in records}
    return [_row_from(dict(by_id[x.row.id])) for x in payments]


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


def idempotency_purge(keep: timedelta) -> Purge:
    """Stored answers older than `keep`: no retry comes that late (the purge deletes them)."""
    return Purge("idempotency_keys", "created_at < now() - $2::interval", keep)
