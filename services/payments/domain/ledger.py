"""Double-entry postings for each payment move; pure, every entry sums to zero.

Sign convention: a line's amount is money arriving in the account (negative: leaving it).
- authorize A:  member_funding -A, authorized_holds +A
- capture C of A with commission k = floor(C * bps / 10_000):
  authorized_holds -A, member_funding +(A - C) (the released rest),
  merchant_payable:<merchant> +(C - k), platform_commission +k
- void A:       authorized_holds -A, member_funding +A
- refund R:     merchant_payable:<merchant> -(R - r), platform_commission -r, refunds +R
  where r is the commission share. Rounding rule: after refunds totalling T, the commission
  returned so far is floor(k * T / C); each refund returns the difference. So every refund
  is balanced to the fen, the commission never returns more than was taken, and a full
  refund returns exactly k and C - k.
"""

from __future__ import annotations

from dataclasses import dataclass

MEMBER_FUNDING = "member_funding"
AUTHORIZED_HOLDS = "authorized_holds"
PLATFORM_COMMISSION = "platform_commission"
REFUNDS = "refunds"
BPS = 10_000


def merchant_payable(merchant_id: object) -> str:
    return f"merchant_payable:{merchant_id}"


@dataclass(frozen=True, slots=True)
class Posting:
    """One journal entry: its kind and its (account, amount) lines, zero lines left out."""

    kind: str
    lines: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if sum(amount for _, amount in self.lines) != 0:
            raise ValueError(f"unbalanced {self.kind} posting: {self.lines}")


def _posting(kind: str, *lines: tuple[str, int]) -> Posting:
    return Posting(kind, tuple((account, amount) for account, amount in lines if amount != 0))


def commission_on(captured: int, commission_bps: int) -> int:
    """The platform's share of a capture, rounded down to the fen."""
    return captured * commission_bps // BPS


def authorize(amount: int) -> Posting:
    return _posting("authorize", (MEMBER_FUNDING, -amount), (AUTHORIZED_HOLDS, amount))


def capture(*, authorized: int, captured: int, commission: int, merchant_id: object) -> Posting:
    return _posting(
        "capture",
        (AUTHORIZED_HOLDS, -authorized),
        (MEMBER_FUNDING, authorized - captured),
        (merchant_payable(merchant_id), captured - commission),
        (PLATFORM_COMMISSION, commission),
    )


def void(amount: int) -> Posting:
    return _posting("void", (AUTHORIZED_HOLDS, -amount), (MEMBER_FUNDING, amount))


def commission_refunded(*, captured: int, commission: int, refunded: int) -> int:
    """Commission returned once `refunded` of `captured` went back (cumulative, rounded down)."""
    return commission * refunded // captured if captured else 0


def refund(
    *, captured: int, commission: int, refunded_before: int, amount: int, merchant_id: object
) -> Posting:
    before = commission_refunded(
        captured=captured, commission=commission, refunded=refunded_before
    )
    after = commission_refunded(
        captured=captured, commission=commission, refunded=refunded_before + amount
    )
    from_commission = after - before
    return _posting(
        "refund",
        (merchant_payable(merchant_id), -(amount - from_commission)),
        (PLATFORM_COMMISSION, -from_commission),
        (REFUNDS, amount),
    )
