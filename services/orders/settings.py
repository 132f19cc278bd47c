"""Orders settings, read once at start-up from ORDERS_* variables."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common import grpcutil
from services.common.settings import JwksClientSettings


class OrdersSettings(JwksClientSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "orders"

    http_port: int = 8000
    # Every replica: `dns:///name:port` (a headless Service), or `ip:port,ip:port,...`;
    # calls are balanced over them and retried on another when one is gone.
    payments_target: str = "127.0.0.1:50052"
    membership_target: str = "127.0.0.1:50053"
    # Admin endpoints answer 401 while no key is configured.
    admin_api_key: SecretStr | None = None
    # Deadline for each gRPC call to payments and membership.
    rpc_timeout_s: float = Field(default=2.0, gt=0)
    # After this, a still-unpaid order is voided and cancelled (reason payment_timeout).
    payment_deadline_s: float = Field(default=15 * 60.0, gt=0)
    # A PENDING order is left to the request that placed it this long before recovery acts.
    recovery_grace_s: float = Field(default=10.0, ge=0)
    recovery_interval_s: float = Field(default=3.0, gt=0)
    # Each PENDING order's own retry back-off: base * 2^attempts, jittered, capped (and
    # never past its payment deadline), so an order whose card keeps failing is not retried
    # on every pass.
    recovery_backoff_s: float = Field(default=5.0, gt=0)
    recovery_backoff_max_s: float = Field(default=120.0, gt=0)
    recovery_batch: int = Field(default=20, ge=1, le=500)
    # An idempotency key claimed this long ago with no order behind it was abandoned.
    idempotency_claim_timeout_s: float = Field(default=60.0, gt=0)
    # Hot SKUs (flash sales) keep their stock in this many bucket rows.
    hot_sku_buckets: int = Field(default=8, ge=1, le=256)
    # Checkouts of one hot SKU in progress at once in this process; beyond: 429 rate-limited.
    hot_sku_max_in_flight: int = Field(default=8, ge=1)
    # Checkouts in progress at once in this process; beyond: 503 overloaded + Retry-After.
    # Batched, a checkout stays in flight across three batched steps, and the cap bounds
    # every batch: 32 (docs/benchmarks.md, "the checkout cap with group commit"). Keep the
    # hot-SKU limit below it, so a flash-sale crowd is told 429 (per SKU) rather than 503.
    max_checkouts_in_flight: int = Field(default=32, ge=1)
    # Storefront listings (GET /v1/products, /v1/categories) are answered from memory this
    # long (single flight per distinct page); 0 turns it off. Product detail is never cached.
    listing_cache_s: float = Field(default=1.0, ge=0, le=60)
    # After an out-of-stock answer, further buyers of that SKU get 409 from memory this long.
    sold_out_cache_s: float = Field(default=1.0, ge=0)
    # Per-member checkout rate: a token bucket of `burst` refilled at `per_s` a second.
    member_checkout_burst: int = Field(default=60, ge=1)
    member_checkout_per_s: float = Field(default=10.0, gt=0)
    # Group commit (ARCHITECTURE.md, Checkout): checkouts in flight together are placed,
    # paid and settled in batches of at most `checkout_batch_max`, each step with at most
    # `checkout_batches_in_flight` batches at once. A batch waits `checkout_batch_window_ms`
    # for company only while other checkouts are in flight in this process (0: never).
    checkout_batch_max: int = Field(default=32, ge=1, le=256)
    checkout_batch_window_ms: float = Field(default=1.0, ge=0, le=50)
    checkout_batches_in_flight: int = Field(default=2, ge=1, le=16)
    # Test-only fault injection: SIGKILL this process at that saga step of a checkout request.
    fault_crash_at: Literal[
        "after_reserve", "after_authorize", "after_capture", "after_confirm"] | None = None
    # Test-only: hold a checkout request this long at `fault_hold_at` (to crash a peer there).
    fault_hold_at: Literal["after_authorize", "after_capture"] | None = None
    fault_hold_s: float = Field(default=0.0, ge=0, le=60)
    # Test-only: the crash (or hold) fires once this many checkout requests are at that
    # step together, e.g. a whole placing or payment batch (1: at the first one).
    fault_batch_of: int = Field(default=1, ge=1, le=256)

    @field_validator("payments_target", "membership_target")
    @classmethod
    def _grpc_target(cls, value: str) -> str:
        return grpcutil.target(value)

    @model_validator(mode="after")
    def _no_faults_in_production(self) -> OrdersSettings:
        if self.environment == "production" and (self.fault_crash_at or self.fault_hold_at):
            raise ValueError("fault injection (ORDERS_FAULT_*) is refused in production")
        return self
