"""Payments settings, read once at start-up from PAYMENTS_* variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import JwksClientSettings


class PaymentsSettings(JwksClientSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "payments"

    http_port: int = 8001
    grpc_port: int = 50052
    # No default: an admin key nobody chose would be a key everybody knows.
    admin_api_key: SecretStr = Field(min_length=16)
    currency: str = Field(default="CNY", pattern="^[A-Z]{3}$")
    # Platform commission on captures, in basis points (500 = 5%).
    commission_bps: int = Field(default=500, ge=0, le=10_000)
    # Stored answers to state-changing calls are replayed this long (orders retries a
    # payment until its deadline, 15 min); the purge deletes older ones.
    idempotency_retention_days: float = Field(default=7.0, gt=0)
    # The simulated card processor and the guards around it.
    processor_latency_ms: int = Field(default=0, ge=0)
    processor_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Below its callers' gRPC deadline (orders' ORDERS_RPC_TIMEOUT_S, 2 s), so that payments
    # answers UNAVAILABLE and counts the failure itself: were they equal, the caller's
    # deadline would cancel the call first and the breaker would never see the timeout.
    processor_timeout_ms: int = Field(default=1_500, ge=1)
    # The breaker opens when, among at least `minimum_calls` distinct requests in the last
    # `window_s`, the share that failed reaches `failure_rate` (see breaker.py); it tries
    # again after `reset_s` with up to `half_open_trials` new requests at once.
    breaker_window_s: float = Field(default=30.0, gt=0)
    # ...unless the processor answered some card within this many seconds: then it is up,
    # and the failures are cards of their own (slow ones), not an outage.
    breaker_alive_s: float = Field(default=5.0, ge=0)
    breaker_minimum_calls: int = Field(default=20, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    breaker_half_open_trials: int = Field(default=3, ge=1)
