"""Request and response bodies of the membership REST API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from services.common.inputs import Int64, StrictModel, Text

CURRENCY = "CNY"


class Money(BaseModel):
    amount: int
    currency: str = CURRENCY


class RegisterRequest(StrictModel):
    # Lengths are bounded here only against abuse; the domain checks give the real messages.
    email: Text = Field(max_length=1024)
    password: Text = Field(max_length=1024)
    name: Text = Field(max_length=1024)
    birth_year: Int64
    region: Text = Field(max_length=64)
    gender: Text | None = Field(default=None, max_length=64)


class MemberOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    tier: str
    points_balance: int


class MemberProfile(MemberOut):
    lifetime_spend: Money


class TokenRequest(StrictModel):
    """`{email, password}` to sign in, or `{grant_type: "refresh_token", refresh_token}`."""

    grant_type: Literal["password", "refresh_token"] = "password"
    email: Text | None = Field(default=None, max_length=1024)
    password: Text | None = Field(default=None, max_length=1024)
    refresh_token: Text | None = Field(default=None, max_length=256)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class PointsEntry(BaseModel):
    id: int
    delta: int
    balance_after: int
    reason: str
    order_id: uuid.UUID
    created_at: datetime


class PointsPage(BaseModel):
    items: list[PointsEntry]
    next_cursor: str | None
