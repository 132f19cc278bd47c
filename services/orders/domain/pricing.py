"""Order pricing in integer fen: line totals, tier discount and points redemption."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

MAX_LINES = 50
MAX_QUANTITY = 100
BPS_PER_WHOLE = 10_000
# Each tier's discount on merchandise (ARCHITECTURE.md, domain rules). Membership decides who
# holds which tier; orders prices with the tier it knows, so the rate table lives here too
# (tests/unit keep it equal to membership's TIER_RULES).
TIER_DISCOUNT_BPS: Mapping[str, int] = {"BRONZE": 0, "SILVER": 200, "GOLD": 500, "PLATINUM": 800}
# The tier of a member orders has not heard of yet (their registration is still on its way).
ENTRY_TIER = "BRONZE"


class PricingError(ValueError):
    """The order breaks a pricing rule; `field` names the request field to blame (422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PricedLine:
    """One requested line with the SKU's current unit price in fen."""

    sku_id: UUID
    product_id: UUID
    merchant_id: UUID
    quantity: int
    unit_price: int


@dataclass(frozen=True, slots=True)
class QuoteLine:
    sku_id: UUID
    product_id: UUID
    merchant_id: UUID
    quantity: int
    unit_price: int
    line_total: int


@dataclass(frozen=True, slots=True)
class Quote:
    """A priced order; every amount is in fen and total = subtotal - discount - points."""

    lines: tuple[QuoteLine, ...]
    subtotal: int
    discount: int
    points_redeemed: int
    total: int


def tier_discount_bps(tier: str) -> int:
    """The tier's discount in basis points; KeyError for a tier this rule does not know."""
    return TIER_DISCOUNT_BPS[tier]


def discount_for(subtotal: int, discount_bps: int) -> int:
    """The tier discount on `subtotal`, rounded down to the fen."""
    return subtotal * discount_bps // BPS_PER_WHOLE


def max_points_redeemable(amount_after_discount: int) -> int:
    """Points (1 point = 1 fen) that pay for at most half of the discounted order."""
    return max(amount_after_discount, 0) // 2


def price_order(
    lines: Sequence[PricedLine],
    *,
    discount_bps: int,
    points_to_redeem: int,
    points_balance: int | None = None,
) -> Quote:
    """Price the lines, apply the tier discount, then redeem points; raise PricingError."""
    _check_lines(lines)
    if not 0 <= discount_bps <= BPS_PER_WHOLE:
        raise PricingError("discount_bps", f"discount must be 0..10000 bps, got {discount_bps}")
    quoted = tuple(_quote_line(line) for line in lines)
    subtotal = sum(line.line_total for line in quoted)
    discount = discount_for(subtotal, discount_bps)
    _check_points(points_to_redeem, points_balance, subtotal - discount)
    return Quote(
        lines=quoted,
        subtotal=subtotal,
        discount=discount,
        points_redeemed=points_to_redeem,
        total=subtotal - discount - points_to_redeem,
    )


def _quote_line(line: PricedLine) -> QuoteLine:
    return QuoteLine(
        sku_id=line.sku_id,
        product_id=line.product_id,
        merchant_id=line.merchant_id,
        quantity=line.quantity,
        unit_price=line.unit_price,
        line_total=line.quantity * line.unit_price,
    )


def _check_lines(lines: Sequence[PricedLine]) -> None:
    if not lines:
        raise PricingError("items", "an order needs at least one line")
    if len(lines) > MAX_LINES:
        raise PricingError("items", f"an order has at most {MAX_LINES} lines, got {len(lines)}")
    seen: set[UUID] = set()
    for i, line in enumerate(lines):
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise PricingError(
                f"items[{i}].quantity",
                f"quantity must be 1..{MAX_QUANTITY}, got {line.quantity}",
            )
        if line.unit_price < 0:
            raise PricingError(f"items[{i}].unit_price", f"SKU {line.sku_id} has a negative price")
        if line.sku_id in seen:
            raise PricingError(
                f"items[{i}].sku_id",
                f"SKU {line.sku_id} appears more than once; put its whole quantity on one line",
            )
        seen.add(line.sku_id)


def _check_points(points: int, balance: int | None, after_discount: int) -> None:
    if points < 0:
        raise PricingError("points_to_redeem", f"points_to_redeem must be ≥ 0, got {points}")
    if balance is not None and points > balance:
        raise PricingError(
            "points_to_redeem", f"only {balance} points available, {points} requested"
        )
    cap = max_points_redeemable(after_discount)
    if points > cap:
        raise PricingError(
            "points_to_redeem",
            f"at most {cap} points (half of {_yuan(after_discount)} after discount) "
            f"may be redeemed on this order, {points} requested",
        )


def _yuan(fen: int) -> str:
    return f"¥{fen // 100:,}.{fen % 100:02d}"
