"""What a refund reported by payments adds to an order, whatever order the reports arrive in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RefundStep:
    """One refund as it lands on the order; amounts in minor units."""

    amount: int  # what this refund adds
    refunded_total: int  # the order's running total refunded after it
    full: bool  # the order is now refunded in full: CONFIRMED → REFUNDED


def refund_step(
    *, total: int, refunded_before: int, reported: int, captured: int
) -> RefundStep | None:
    """The step from payments' running totals (`reported` refunded of `captured`).

    None when the report adds nothing: a duplicate, or an older report overtaken by a newer
    one. A report that reaches the captured amount or the order's total is a full refund.
    """
    full = reported >= total or 0 < captured <= reported
    after = total if full else reported
    if after <= refunded_before:
        return None
    return RefundStep(amount=after - refunded_before, refunded_total=after, full=full)
