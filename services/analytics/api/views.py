"""Operator views: the series per second or minute, rankings and breakdowns (admin key)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.analytics import operator_queries as q
from services.analytics.api.deps import Admin, Connection, SeriesWindow, Window
from services.analytics.api.reports import Money, Report, money
from services.common.inputs import QueryInt64

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], dependencies=[Admin])


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def average(total: int, count: int) -> Money | None:
    """Average order value in fen, rounded down; null without orders."""
    return money(total // count) if count else None


class Figures(BaseModel):
    gmv: Money
    net_gmv: Money
    refunds: Money
    orders: int
    average_order_value: Money | None
    payment_attempts: int
    payment_success_rate: float | None = Field(description="captured / attempts; null without")


class SeriesPoint(Figures):
    at: datetime = Field(description="start of the second or minute")


class OverviewOut(Report, Figures):
    granularity: q.Granularity
    series: list[SeriesPoint] = Field(description="buckets with activity only, oldest first")


def figures(gmv: int, refunds: int, orders: int, attempts: int, succeeded: int) -> Figures:
    return Figures(
        gmv=money(gmv), net_gmv=money(gmv - refunds), refunds=money(refunds), orders=orders,
        average_order_value=average(gmv, orders), payment_attempts=attempts,
        payment_success_rate=ratio(succeeded, attempts),
    )


@router.get("/overview", response_model=OverviewOut,
            summary="Totals and a series per second or minute", operation_id="getOverview")
async def overview(window: SeriesWindow, conn: Connection) -> OverviewOut:
    """GMV, net GMV, orders, average order value and payment success, in total and per bucket.

    Order money is booked at confirmation (GMV) and at refund (refunds); payments count
    in the bucket where they were first seen."""
    start, end, granularity = window
    points = await q.series(conn, start=start, end=end, granularity=granularity)
    sums = [sum(getattr(p, f) for p in points)
            for f in ("gmv", "refunds", "orders", "payment_attempts", "payments_succeeded")]
    return OverviewOut(
        from_=start, to=end, granularity=granularity, **figures(*sums).model_dump(),
        series=[
            SeriesPoint(at=p.at, **figures(p.gmv, p.refunds, p.orders, p.payment_attempts,
                                           p.payments_succeeded).model_dump())
            for p in points
        ],
    )


class RankedOut(BaseModel):
    key: str = Field(description="product id, merchant id or category")
    units: int
    gmv: Money


class TopOut(Report):
    by: q.Dimension
    metric: q.Metric
    items: list[RankedOut]


@router.get("/top", response_model=TopOut,
            summary="Top products, merchants or categories", operation_id="getTop")
async def top(
    window: Window, conn: Connection,
    by: Annotated[q.Dimension, Query()] = "product",
    metric: Annotated[q.Metric, Query()] = "gmv",
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 10,
) -> TopOut:
    """Top products, merchants or categories by gross GMV or by units of confirmed lines."""
    start, end = window
    rows = await q.top(conn, start=start, end=end, by=by, metric=metric, limit=limit)
    return TopOut(from_=start, to=end, by=by, metric=metric, items=[
        RankedOut(key=r.key, units=r.units, gmv=money(r.gmv)) for r in rows
    ])


class BreakdownGroupOut(BaseModel):
    group: str = Field(description='the value, or "unknown" for buyers analytics has not seen')
    orders: int
    gmv: Money


class BreakdownOut(Report):
    dimension: q.Demographic
    items: list[BreakdownGroupOut]


@router.get("/gmv-by", response_model=BreakdownOut, summary="GMV by buyer demographic",
            operation_id="getGmvBy")
async def gmv_by(
    window: Window, conn: Connection,
    dimension: Annotated[q.Demographic, Query()] = "region",
) -> BreakdownOut:
    """GMV of orders confirmed in the window by the buyer's region, age band or gender."""
    start, end = window
    rows = await q.gmv_by(conn, start=start, end=end, dimension=dimension)
    return BreakdownOut(from_=start, to=end, dimension=dimension, items=[
        BreakdownGroupOut(group=r.group, orders=r.orders, gmv=money(r.gmv)) for r in rows
    ])
