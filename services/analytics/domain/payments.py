"""Payment status precedence, so late events never move a payment backwards."""

from __future__ import annotations

# Later in a payment's life ranks higher; VOIDED and FAILED end a payment that never
# got captured, so they only have to beat AUTHORIZED.
STATUS_RANK = {
    "AUTHORIZED": 0,
    "VOIDED": 1,
    "FAILED": 1,
    "CAPTURED": 1,
    "PARTIALLY_REFUNDED": 2,
    "REFUNDED": 3,
}
SUCCEEDED = frozenset({"CAPTURED", "PARTIALLY_REFUNDED", "REFUNDED"})


def normalise_status(status: str, subject: str) -> str:
    """The event's status, or (when a producer left it empty) the verb of its subject."""
    return (status or subject.rsplit(".", 1)[-1]).strip().upper()


def status_rank(status: str) -> int:
    return STATUS_RANK.get(status, -1)
