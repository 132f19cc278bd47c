"""Orders settings, read once at start-up from ORDERS_* variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "orders"

    http_port: int = 8000
    payments_target: str = "127.0.0.1:50052"
    membership_target: str = "127.0.0.1:50053"
    jwks_url: str = "http://127.0.0.1:8002/.well-known/jwks.json"
    # Admin endpoints answer 401 while no key is configured.
    admin_api_key: SecretStr | None = None
    # Deadline for each gRPC call to payments and membership.
    rpc_timeout_s: float = Field(default=2.0, gt=0)
    # After this, a still-unpaid order is voided and cancelled (reason payment_timeout).
    payment_deadline_s: float = Field(default=15 * 60.0, gt=0)
    # A PENDING order is left to the request that placed it this long before recovery acts.
    recovery_grace_s: float = Field(default=10.0, ge=0)
    recovery_interval_s: float = Field(default=3.0, gt=0)
    recovery_batch: int = Field(default=20, ge=1, le=500)
    # An idempotency key claimed this long ago with no order behind it was abandoned.
    idempotency_claim_timeout_s: float = Field(default=60.0, gt=0)
