"""What request handlers, the saga and the recovery loop share in one running service."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.common.auth import JwksVerifier
from services.orders.admission import Admission
from services.orders.clients import MembershipClient, PaymentsClient
from services.orders.page_cache import PageCache
from services.orders.pipeline import Pipeline
from services.orders.settings import OrdersSettings


@dataclass(frozen=True)
class Context:
    settings: OrdersSettings
    pool: asyncpg.Pool
    payments: PaymentsClient
    membership: MembershipClient
    verifier: JwksVerifier
    admission: Admission
    listings: PageCache
    pipeline: Pipeline  # checkout's batched writes: place, pay, settle
