"""`marketplace audit` on real payments data: clean as made, and one corrupted row is caught,
by the full audit and by `--since` a time before the data was made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from marketplace.payments.v1 import payments_pb2 as pb

from services.cli.audit import Check, report, run_audit
from services.common.migrations import migrate_service
from tests.integration.payments.harness import Running, authorize_request

MATCH = "per order, captured - refunded equals what orders believes"
PAYABLES = "each merchant's payable in the journal matches its payments"


async def _paid(payments: Running, merchant: uuid.UUID, amount: int, *, refund: int = -1,
                token: str = "tok_visa") -> pb.Payment:
    """Authorize and capture; refund `refund` fen (0: all) when ≥ 0."""
    stub = payments.stub
    p = await stub.Authorize(authorize_request(merchant_id=merchant, amount=amount, token=token))
    if token != "tok_visa":
        return p
    p = await stub.Capture(pb.CaptureRequest(idempotency_key=f"c-{p.id}", payment_id=p.id))
    if refund >= 0:
        p = await stub.Refund(pb.RefundRequest(idempotency_key=f"r-{p.id}", payment_id=p.id,
                                               amount=refund))
    return p


async def _insert_order(admin: asyncpg.Connection, p: pb.Payment, status: str) -> None:
    """The order as orders would hold it (orders itself is not running in this test)."""
    now = datetime.now(UTC)
    # What orders records refunded: all of a REFUNDED order, what payments did of a CONFIRMED one.
    refunded = {"REFUNDED": p.amount.amount, "CONFIRMED": p.refunded}.get(status, 0)
    await admin.execute(
        "INSERT INTO orders.orders (id, member_id, status, subtotal, discount, points_redeemed, "
        "total, payment_token, payment_id, idempotency_key, payment_deadline, retry_at, "
        "refunded) VALUES ($1, $2, $3, $4, 0, 0, $4, 'tok_visa', $5, $6, $7, $7, $8)",
        uuid.UUID(p.order_id), uuid.UUID(p.member_id), status, p.amount.amount,
        uuid.UUID(p.id), f"idem-{p.order_id}", now, refunded,
    )


@pytest.fixture(params=["full", "since"])
def since(request: pytest.FixtureRequest) -> datetime | None:
    """The whole history, or the window from just before the test made its data."""
    return None if request.param == "full" else datetime.now(UTC) - timedelta(seconds=1)


async def _checks(payments: Running, since: datetime | None) -> dict[str, Check]:
    # settle 0: the event-driven checks (points, GMV) have no services behind them here.
    results = await run_audit(payments.db.auditor_dsn, settle_s=0, since=since)
    return {c.name: c for c in results}


async def test_the_audit_catches_one_corrupted_row(payments: Running, since: datetime | None
                                                   ) -> None:
    db = payments.db
    for service in ("orders", "membership", "analytics"):
        await migrate_service(db.dsn(service), service)
    merchant = uuid.uuid4()
    kept = await _paid(payments, merchant, 10_000)
    partly = await _paid(payments, merchant, 9_999, refund=3_333)
    refunded = await _paid(payments, merchant, 5_000, refund=0)
    declined = await _paid(payments, merchant, 3_000, token="tok_chargeDeclined")
    admin = await asyncpg.connect(db.admin_dsn)
    try:
        await _insert_order(admin, kept, "CONFIRMED")
        await _insert_order(admin, refunded, "REFUNDED")
        await _insert_order(admin, declined, "CANCELLED")
        clean = await _checks(payments, since)
        assert clean[MATCH].ok and clean[MATCH].checked == 3, clean[MATCH].violations
        # The full audit checks each account (a merchant's and the platform's), a window
        # each payment of it (the four made here).
        assert clean[PAYABLES].ok, clean[PAYABLES].violations
        assert clean[PAYABLES].checked == (2 if since is None else 4)

        # Orders believes a different total than payments captured.
        await admin.execute("UPDATE orders.orders SET subtotal = 10100, total = 10100 "
                            "WHERE id = $1", uuid.UUID(kept.order_id))
        results = await _checks(payments, since)
        assert results[MATCH].violations == [
            f"order {kept.order_id} is CONFIRMED (so 10100 kept) but payment {kept.id} keeps "
            "10000 (captured 10000 - refunded 0)"
        ]
        assert f"[FAIL] {MATCH}: 3 checked, 1 violations" in report(list(results.values()),
                                                                   as_json=False)
        await admin.execute("UPDATE orders.orders SET subtotal = 10000, total = 10000 "
                            "WHERE id = $1", uuid.UUID(kept.order_id))

        # The payment row claims more commission than the journal took from the merchant.
        await admin.execute("UPDATE payments.payments SET commission = commission + 1 "
                            "WHERE id = $1", uuid.UUID(partly.id))
        results = await _checks(payments, since)
        assert results[MATCH].ok
        # 9 999 captured, 499 commission, 3 333 refunded returning 166: 9 500 - 3 167 + 9 500.
        assert results[PAYABLES].violations == ([
            f"merchant_payable:{merchant}: the journal holds 15833 but the payments' captures "
            "net of commission and refunds come to 15832",
            "platform_commission: the journal holds 833 but the payments' captures net of "
            "commission and refunds come to 834",
        ] if since is None else [
            f"payment {partly.id}: merchant_payable:{merchant} holds 6333 for it in the journal "
            "but its capture net of commission and refunds comes to 6332",
            f"payment {partly.id}: platform_commission holds 333 for it in the journal but its "
            "commission net of refunds comes to 334",
        ])
    finally:
        await admin.close()



async def test_the_audit_holds_partial_refunds_to_the_orders_refunded_column(
    payments: Running, since: datetime | None,
) -> None:
    db = payments.db
    for service in ("orders", "membership", "analytics"):
        await migrate_service(db.dsn(service), service)
    merchant = uuid.uuid4()
    partly = await _paid(payments, merchant, 9_999, refund=3_333)
    refunded = await _paid(payments, merchant, 5_000, refund=0)
    admin = await asyncpg.connect(db.admin_dsn)
    try:
        await _insert_order(admin, partly, "CONFIRMED")
        await _insert_order(admin, refunded, "REFUNDED")
        clean = await _checks(payments, since)
        assert clean[MATCH].ok and clean[MATCH].checked == 2, clean[MATCH].violations

        # Orders missed the partial refund: it believes it kept the whole total.
        await admin.execute("UPDATE orders.orders SET refunded = 0 WHERE id = $1",
                            uuid.UUID(partly.order_id))
        results = await _checks(payments, since)
        assert results[MATCH].violations == [
            f"order {partly.order_id} is CONFIRMED (so 9999 kept) but payment {partly.id} keeps "
            "6666 (captured 9999 - refunded 3333)"
        ]
        await admin.execute("UPDATE orders.orders SET refunded = 3333 WHERE id = $1",
                            uuid.UUID(partly.order_id))

        # A REFUNDED order whose column says part of it is still kept.
        await admin.execute("UPDATE orders.orders SET refunded = 4000 WHERE id = $1",
                            uuid.UUID(refunded.order_id))
        results = await _checks(payments, since)
        assert results[MATCH].violations == [
            f"order {refunded.order_id} is REFUNDED but records 4000 of its 5000 refunded"
        ]

        # More refunded than the order's total is refused by the column's CHECK.
        with pytest.raises(asyncpg.CheckViolationError):
            await admin.execute("UPDATE orders.orders SET refunded = total + 1 WHERE id = $1",
                                uuid.UUID(refunded.order_id))
    finally:
        await admin.close()
