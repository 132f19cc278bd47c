"""Analytics settings (env prefix ANALYTICS_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "analytics"

    http_port: int = 8003
    # Operator reports (GMV, top products) need it; no default, so none is ever guessable.
    admin_api_key: SecretStr = Field(min_length=16)
    # Per-second GMV rows (the big screen, granularity=second) are kept this long; per-minute
    # rows, the facts and the insights are kept (they are the reports).
    second_retention_days: float = Field(default=7.0, gt=0)
    consumer_batch_size: int = Field(default=200, ge=1, le=1000)
    # Wait this long after a partial batch: events then share transactions (fewer commits
    # and statements per event) at the cost of that much more lag (the goal is p99 < 500 ms).
    consumer_linger_ms: int = Field(default=100, ge=0, le=1000)
