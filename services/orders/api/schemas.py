"""Request and response models of the storefront API (shapes in ARCHITECTURE.md)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


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


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku_id: uuid.UUID
    quantity: int = Field(ge=1, le=100)


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=100, description='card token, e.g. "tok_visa"')


class PlaceOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[OrderItemIn] = Field(min_length=1, max_length=50)
    payment: PaymentIn
    points_to_redeem: int = Field(default=0, ge=0, description="100 points redeem ¥1")


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
    payment_id: uuid.UUID | None
    cancel_reason: str | None
    created_at: str = Field(description="RFC 3339, UTC")


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None


class MerchantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class MerchantCreated(BaseModel):
    id: uuid.UUID
    name: str
    api_key: str = Field(description="shown once; only its hash is stored")
