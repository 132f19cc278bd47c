"""Brand insights for one merchant, with its own X-API-Key; another merchant's id is 404."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.analytics import insight_queries as q
from services.analytics.api.deps import Connection, Merchant, SeriesWindow
from services.analytics.api.reports import Money, Report, money
from services.analytics.domain import kanon
from services.analytics.operator_queries import Granularity
from services.common import errors
from services.common.inputs import QueryInt64

router = APIRouter(prefix="/v1/insights", tags=["insights"])

GROUPS_NOTE = (
    f"groups with fewer than {kanon.K} distinct buyers are merged into \"other\"; "
    f"\"other\" itself is left out while it has fewer than {kanon.K}"
)


class SalesPointOut(BaseModel):
    at: datetime
    gmv: Money
    units: int


class GroupOut(BaseModel):
    group: str
    buyers: int
    gmv: Money


class Buyers(BaseModel):
    age_band: list[GroupOut] = Field(description=GROUPS_NOTE)
    region: list[GroupOut] = Field(description=GROUPS_NOTE)
    gender: list[GroupOut] = Field(description=GROUPS_NOTE)


class SkuOut(BaseModel):
    sku_id: uuid.UUID
    product_id: uuid.UUID
    units: int
    gmv: Money


class InsightsOut(Report):
    merchant_id: uuid.UUID
    granularity: Granularity
    gmv: Money
    units: int
    orders: int
    buyers: int
    repeat_purchase_rate: float | None = Field(
        description="buyers with two or more orders in the window / buyers"
    )
    average_basket: Money | None = Field(description="the merchant's GMV per order")
    series: list[SalesPointOut]
    buyers_by: Buyers
    top_skus: list[SkuOut]


def _groups(buckets: list[kanon.Bucket]) -> list[GroupOut]:
    return [GroupOut(group=b.group, buyers=b.buyers, gmv=money(b.gmv)) for b in buckets]


@router.get("/merchants/{merchant_id}", response_model=InsightsOut, responses=errors.problems(404),
            summary="A merchant's brand insights (its own only)",
            operation_id="getMerchantInsights")
async def merchant_insights(
    merchant_id: uuid.UUID, me: Merchant, window: SeriesWindow, conn: Connection,
    top: Annotated[QueryInt64, Query(ge=1, le=100, description="how many top SKUs")] = 10,
) -> InsightsOut:
    """GMV and units over time, buyers by age band, region and gender, repeat purchases,
    average basket and top SKUs of the merchant's confirmed order lines (gross of refunds)."""
    if merchant_id != me:
        raise errors.not_found(f"merchant {merchant_id}")  # never confirm another's existence
    start, end, granularity = window
    totals = await q.totals(conn, me, start, end)
    basket = totals.average_basket
    return InsightsOut(
        from_=start, to=end, merchant_id=me, granularity=granularity,
        gmv=money(totals.gmv), units=totals.units, orders=totals.orders, buyers=totals.buyers,
        repeat_purchase_rate=totals.repeat_purchase_rate,
        average_basket=None if basket is None else money(basket),
        series=[SalesPointOut(at=p.at, gmv=money(p.gmv), units=p.units)
                for p in await q.sales(conn, me, start, end, granularity)],
        buyers_by=Buyers(**{
            dim: _groups(await q.buyers_by(conn, me, start, end, dim))
            for dim in ("age_band", "region", "gender")
        }),
        top_skus=[SkuOut(sku_id=r.sku_id, product_id=r.product_id, units=r.units,
                         gmv=money(r.gmv)) for r in await q.top_skus(conn, me, start, end, top)],
    )


@router.get("/me", response_model=InsightsOut,
            summary="The calling merchant's brand insights", operation_id="getMyInsights")
async def my_insights(
    me: Merchant, window: SeriesWindow, conn: Connection,
    top: Annotated[QueryInt64, Query(ge=1, le=100)] = 10,
) -> InsightsOut:
    """The same report for the merchant the key belongs to."""
    return await merchant_insights(me, me, window, conn, top)
