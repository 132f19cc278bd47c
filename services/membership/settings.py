"""Membership settings, read once at start-up from MEMBERSHIP_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.settings import ServiceSettings

KeyFiles = Annotated[tuple[Path, ...], NoDecode]


class MembershipSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMBERSHIP_", extra="ignore", frozen=True)

    service_name: ClassVar[str] = "membership"

    http_port: int = 8002
    grpc_port: int = 50053
    # Ed25519 private key (PEM, PKCS8) that signs access tokens; its public key is published.
    jwt_private_key_file: Path
    # Keys signed with before a rotation: published for verification, never used to sign.
    jwt_previous_key_files: KeyFiles = ()
    # Withdrawn keys (e.g. leaked): never published, and tokens they signed are refused.
    jwt_retired_key_files: KeyFiles = ()
    access_token_ttl_s: int = Field(default=15 * 60, ge=60, le=3600)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=3600)
    # Refresh tokens are kept this long past their expiry (a reused one is still recognised
    # and its family revoked), then purged.
    refresh_token_retention_days: float = Field(default=30.0, gt=0)
    # Sign-in attempts per email and per client address, counted for the whole cluster:
    # this many at once, earned back at this many per window (one each window / attempts).
    login_window_s: float = Field(default=300.0, gt=0)
    login_attempts_per_email: int = Field(default=10, ge=1)
    login_attempts_per_client: int = Field(default=100, ge=1)
    # Password hashes computed at once (each takes ~19 MiB and a core for tens of ms).
    password_hash_concurrency: int = Field(default=4, ge=1)
    # Wait this long after a partial batch of order events, so that several share one
    # transaction; points then show up to that much later.
    consumer_linger_ms: int = Field(default=50, ge=0, le=1000)

    @field_validator("jwt_previous_key_files", "jwt_retired_key_files", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value
