"""The commands PaymentService accepts, validated, each with a fingerprint of its request."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Literal

ErrorCode = Literal[
    "invalid_argument", "not_found", "already_exists", "failed_precondition", "unavailable"
]
MAX_KEY_LENGTH = 200
KEY_REUSED = "idempotency key reused with a different request"


class CommandError(Exception):
    """A refused command; `code` names the gRPC status it answers with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def parse_uuid(field: str, raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise CommandError("invalid_argument", f"{field} must be a UUID, got {raw!r}") from None


def check_key(raw: str) -> str:
    if not raw or len(raw) > MAX_KEY_LENGTH:
        raise CommandError(
            "invalid_argument", f"idempotency_key is required (1..{MAX_KEY_LENGTH} characters)"
        )
    return raw


class _Command:
    """Fingerprint: a hash of every field except the key, so a replay can be recognised."""

    key: str

    def fingerprint(self) -> str:
        values = [str(v) for v in self._hashed()]
        return hashlib.sha256("\x1f".join([type(self).__name__, *values]).encode()).hexdigest()

    def _hashed(self) -> tuple[object, ...]:
        # The fields are flat values: astuple's deep copy of each would only cost time.
        names = self.__dataclass_fields__  # type: ignore[attr-defined]
        return tuple(getattr(self, name) for name in names)[1:]


@dataclass(frozen=True, slots=True)
class AuthorizePayment(_Command):
    key: str
    order_id: uuid.UUID
    member_id: uuid.UUID
    merchant_id: uuid.UUID
    amount: int
    currency: str
    token: str
    capture_key: str = ""  # set: a sale, captured at once as Capture(capture_key) would

    def _hashed(self) -> tuple[object, ...]:
        # Added later: it counts only when set, so an authorize-only request keeps its hash.
        values = _Command._hashed(self)  # (no zero-argument super() in a slots dataclass)
        return values if self.capture_key else values[:-1]


@dataclass(frozen=True, slots=True)
class CapturePayment(_Command):
    key: str
    payment_id: uuid.UUID
    amount: int  # 0: the whole authorization


@dataclass(frozen=True, slots=True)
class VoidPayment(_Command):
    key: str
    payment_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RefundPayment(_Command):
    key: str
    payment_id: uuid.UUID
    amount: int  # 0: everything still refundable
    reason: str
