"""Settings shared by every service; each service subclasses with its env prefix."""

from __future__ import annotations

import os
import socket
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_ONLY_SECRET = "local-dev-only-secret"


class ServiceSettings(BaseSettings):
    """What every service reads at start-up. Subclasses set `env_prefix` (ORDERS_, ...)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: ClassVar[str] = "service"

    database_url: SecretStr = Field(
        description="postgresql:// URL of this service's own login role; its schema is its "
        "name. Request traffic: through a transaction-pooling PgBouncer when db_pooler",
    )
    # Direct to Postgres, for what needs a session of its own: the outbox relay's LISTEN
    # and leader lock, migrations. Unset: database_url (no pooler in between).
    database_session_url: SecretStr | None = None
    # database_url goes through a transaction-pooling PgBouncer: no named prepared
    # statements (each statement is planned every time) and search_path from the role.
    db_pooler: bool = False
    nats_url: str = "nats://127.0.0.1:4222"
    # JetStream replicas for the streams this service creates: 3 on a NATS cluster.
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Shared secret from which each service's identity token for gRPC is derived.
    internal_auth_secret: SecretStr = SecretStr(LOCAL_ONLY_SECRET)
    environment: str = Field(default="local", pattern="^(local|test|production)$")
    # Bound on concurrent HTTP requests; beyond it the service answers 503 + Retry-After.
    max_in_flight: int = Field(default=512, ge=1)
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)
    # After a NOTIFY wakes the outbox relay, wait this long so that the rows committing
    # meanwhile go out in the same batch (one SELECT and one UPDATE for all of them).
    outbox_linger_ms: int = Field(default=10, ge=0, le=1000)
    log_level: str = "INFO"
    # Which process of the service this is, in logs, traces and metrics: the launcher sets
    # `orders-1`, `orders-2`...; Kubernetes the pod's name (downward API).
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
                             min_length=1, max_length=100)
    # On SIGTERM, /readyz answers 503 this long before the servers stop, so that a load
    # balancer's health checks take the replica out of rotation while it still answers.
    drain_s: float = Field(default=0.0, ge=0, le=60)
    # Data lifecycle (services/common/purge.py, docs/operations.md "Retention"): how long
    # published outbox rows (for `marketplace outbox republish`), inbox rows (past any
    # redelivery: the streams keep 7 days) and retried dead letters are kept, and how often
    # one replica purges what is older, in batches of `purge_batch` rows.
    outbox_retention_h: float = Field(default=24.0, gt=0)
    inbox_retention_days: float = Field(default=8.0, gt=7)
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
    purge_interval_s: float = Field(default=600.0, gt=0)
    purge_batch: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("internal_auth_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("internal_auth_secret must be at least 16 characters")
        return value

    def model_post_init(self, _context: object) -> None:
        if self.db_pooler and self.database_session_url is None:
            raise ValueError(
                "db_pooler is set but database_session_url is not: the outbox relay's "
                "LISTEN and leader lock need a direct session, not a transaction pooler"
            )
        if (
            self.environment == "production"
            and self.internal_auth_secret.get_secret_value() == LOCAL_ONLY_SECRET
        ):
            raise ValueError(
                "internal_auth_secret is the local default; set a real secret in production"
            )

    @property
    def session_dsn(self) -> str:
        """The direct DSN for session work (database_url when no pooler is in between)."""
        return (self.database_session_url or self.database_url).get_secret_value()

    @property
    def schema(self) -> str:  # type: ignore[override]  # pydantic's deprecated .schema()
        """The Postgres schema this service owns (its own name)."""
        return self.service_name


class JwksClientSettings(ServiceSettings):
    """For the services that verify member access tokens against membership's JWKS."""

    jwks_url: str = "http://127.0.0.1:8002/.well-known/jwks.json"
    # How long the fetched keys are trusted when the JWKS response has no Cache-Control
    # max-age; a key membership retires is accepted here up to about this long after.
    jwks_max_age_s: float = Field(default=60.0, ge=0, le=3600)
    # The most the keys are trusted, whatever max-age the JWKS response gives.
    jwks_max_age_ceiling_s: float = Field(default=300.0, ge=0, le=3600)
    # When membership cannot be reached, stale keys stay in use this long past their max
    # age, so members stay signed in; after that, authenticated requests answer 503.
    jwks_stale_grace_s: float = Field(default=600.0, ge=0)
