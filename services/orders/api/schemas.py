"""Request and response models of the storefront API (shapes in ARCHITECTURE.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictStr, StringConstraints

from services.common.inputs import Bool, Int64, NoNul, StrictModel, Text


class Money(BaseModel):
    amount: int = Field(description="integer minor units (fen for CNY)")
    currency: str = "CNY"


class Sku(BaseModel):
    id: uuid.UUID
    attributes: dict[str, str | int | float | bool | None]
    price: Money
    stock_available: int


class Product(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    title: str
    description: str
    category: str
    hot: bool
    skus: list[Sku]


class ProductPage(BaseModel):
    items: list[Product]
    next_cursor: str | None


class OrderItemIn(StrictModel):
    sku_id: uuid.UUID
    quantity: Int64 = Field(ge=1, le=100)


class PaymentIn(StrictModel):
    token: Text = Field(min_length=1, max_length=100, description='card token, e.g. "tok_visa"')


class PlaceOrderIn(StrictModel):
    items: list[OrderItemIn] | None = Field(default=None, min_length=1, max_length=50)
    from_cart: Bool = Field(default=False, description="check out the cart instead")
    payment: PaymentIn
    points_to_redeem: Int64 = Field(default=0, ge=0, description="100 points redeem ¥1")


class OrderItem(BaseModel):
    sku_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int
    unit_price: Money
    line_total: Money


class Order(BaseModel):
    id: uuid.UUID
    member_id: uuid.UUID
    status: str = Field(description="PENDING, CONFIRMED, CANCELLED or REFUNDED")
    items: list[OrderItem]
    subtotal: Money
    discount: Money
    points_redeemed: int
    total: Money
    refunded: Money = Field(description="refunded of `total` so far: part of it while the order "
                            "stays CONFIRMED, all of it once REFUNDED")
    payment_id: uuid.UUID | None
    cancel_reason: str | None
    created_at: str = Field(description="RFC 3339, UTC")


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None


class MerchantIn(StrictModel):
    name: Text = Field(min_length=1, max_length=200)


class MerchantCreated(BaseModel):
    id: uuid.UUID
    name: str
    api_key: str = Field(description="shown once; only its hash is stored")


ShortKey = Annotated[StrictStr, StringConstraints(min_length=1, max_length=40), NoNul]
ShortValue = Annotated[StrictStr, StringConstraints(max_length=100), NoNul]
MAX_PRICE = 100_000_000  # ¥1,000,000 in fen
MAX_STOCK = 1_000_000


class MoneyIn(StrictModel):
    amount: Int64 = Field(gt=0, le=MAX_PRICE, description="fen, > 0")
    currency: Literal["CNY"] = "CNY"


class SkuIn(StrictModel):
    attributes: dict[ShortKey, ShortValue] = Field(default_factory=dict, max_length=20,
                                                   description='flat, e.g. {"colour": "red"}')
    price: MoneyIn
    stock: Int64 = Field(ge=0, le=MAX_STOCK)


class ProductIn(StrictModel):
    """Unknown fields (`id`, `merchant_id`, `stock_available`, ...) are refused: 422."""

    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=5000)
    category: Text = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9 &-]*$")
    hot: Bool = False
    skus: list[SkuIn] = Field(min_length=1, max_length=50)


class ProductPatch(StrictModel):
    title: Text | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=5000)
    category: Text | None = Field(default=None, min_length=1, max_length=100,
                                  pattern=r"^[a-z0-9][a-z0-9 &-]*$")
    hot: Bool | None = None


class RestockIn(StrictModel):
    quantity: Int64 = Field(ge=1, le=MAX_STOCK)


class Restocked(BaseModel):
    sku_id: uuid.UUID
    stock_available: int = Field(description="units on hand now")


class ApiKey(BaseModel):
    id: uuid.UUID
    api_key: str = Field(description="shown once; the previous key stops working")


class Category(BaseModel):
    name: str
    product_count: int


class Categories(BaseModel):
    items: list[Category]


class CartItemIn(StrictModel):
    sku_id: uuid.UUID
    quantity: Int64 = Field(ge=0, le=100, description="0 removes the line")


class CartItem(BaseModel):
    sku_id: uuid.UUID
    quantity: int
    unit_price: Money


class Cart(BaseModel):
    items: list[CartItem]
