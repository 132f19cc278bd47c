"""What a refund of a confirmed order changes: lifetime spend and the order's earned points.

Orders announces each refund with its amount and, since partial refunds, the order's running
total refunded. The running total makes the outcome independent of redelivery and order:
a report at or below what was already applied changes nothing.
"""

from __future__ import annotations


def refunded_after(
    *, total: int, refunded_before: int, amount: int, refunded_total: int | None
) -> int:
    """The order's running refund after an event, within 0..total.

    `refunded_total` is None for events from before partial refunds; their `amount` is added.
    """
    if refunded_total is not None:
        after = max(refunded_total, refunded_before)
    else:
        after = refunded_before + max(amount, 0)
    return min(after, total)


def points_to_reverse(*, points_earned: int, total: int, refunded: int) -> int:
    """Earned points that `refunded` fen of the order take back in all, rounded down.

    floor(points_earned * refunded / total): proportional, and order-independent since it
    depends only on the running refund; the full refund takes back every earned point.
    """
    if total <= 0 or refunded >= total:
        return points_earned
    return points_earned * max(refunded, 0) // total
