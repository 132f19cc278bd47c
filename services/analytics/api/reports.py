"""Operator reports: live GMV, top products, payment success rate (admin key)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.analytics import queries
from services.analytics.api.deps import Admin, Connection, Window
from services.common.inputs import QueryInt64

CURRENCY = "CNY"

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], dependencies=[Admin])


class Money(BaseModel):
    amount: int
    currency: str = CURRENCY


def money(amount: int) -> Money:
    return Money(amount=amount)


class Report(BaseModel):
    """Every report names the window it covers."""

    from_: datetime = Field(serialization_alias="from")
    to: datetime


class MinutePoint(BaseModel):
    minute: datetime
    gmv: Money
    refunds: Money
    orders: int


class GmvOut(Report):
    gmv: Money
    net_gmv: Money
    refunds: Money
    orders: int
    series: list[MinutePoint] = Field(description="minutes with activity only, oldest first")


class ProductOut(BaseModel):
    product_id: uuid.UUID
    merchant_id: uuid.UUID | None
    category: str
    units: int
    gmv: Money


class TopProductsOut(Report):
    items: list[ProductOut]


class PaymentsOut(Report):
    attempts: int
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / attempts; null without attempts")


@router.get("/gmv", response_model=GmvOut, summary="GMV, refunds and orders per minute",
            operation_id="getGmv")
async def gmv(window: Window, conn: Connection) -> GmvOut:
    """GMV of orders confirmed in [from, to), refunds booked in it, and the per-minute series."""
    start, end = window
    report = await queries.gmv(conn, start=start, end=end)
    return GmvOut(
        from_=start, to=end,
        gmv=money(report.gmv), net_gmv=money(report.net_gmv), refunds=money(report.refunds),
        orders=report.orders,
        series=[
            MinutePoint(minute=r.minute, gmv=money(r.gmv), refunds=money(r.refunds),
                        orders=r.orders)
            for r in report.series
        ],
    )


@router.get("/top-products", response_model=TopProductsOut, summary="Top products by GMV",
            operation_id="getTopProducts")
async def top_products(
    window: Window, conn: Connection, limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 10
) -> TopProductsOut:
    """Products by gross GMV of confirmed order lines in [from, to)."""
    start, end = window
    rows = await queries.top_products(conn, start=start, end=end, limit=limit)
    return TopProductsOut(
        from_=start, to=end,
        items=[
            ProductOut(product_id=r.product_id, merchant_id=r.merchant_id, category=r.category,
                       units=r.units, gmv=money(r.gmv))
            for r in rows
        ],
    )


@router.get("/payments", response_model=PaymentsOut, summary="Payment success rate",
            operation_id="getPaymentSuccess")
async def payments(window: Window, conn: Connection) -> PaymentsOut:
    """Payment success rate of payments first seen in [from, to)."""
    start, end = window
    report = await queries.payments(conn, start=start, end=end)
    rate = report.succeeded / report.attempts if report.attempts else None
    return PaymentsOut(
        from_=start, to=end, attempts=report.attempts, succeeded=report.succeeded,
        failed=report.failed, success_rate=rate,
    )
