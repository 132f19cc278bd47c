"""Local secrets: role passwords, the admin API key, the internal auth secret, the JWT key.

They are generated once into `.data/` (mode 0600) and reused, so a second `make run`
finds the same database roles and tokens still verify.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.cli.dbsetup import ROLES, SERVICES
from services.cli.natsserver import NATS_ADMIN_USER

# `postgres` is the embedded server's superuser; the others are the login roles.
PASSWORD_NAMES = ("postgres", *ROLES)
# One NATS user per service (its own subjects only) and the admin the CLI and tests use.
NATS_USERS = (*SERVICES, NATS_ADMIN_USER)


@dataclass(frozen=True)
class LocalSecrets:
    """What `.data/secrets.json` holds."""

    passwords: dict[str, str]
    admin_api_key: str
    internal_auth_secret: str
    extra: dict[str, object] = field(default_factory=dict)
    # NATS user -> password; empty: NATS without authentication (an external server).
    nats_passwords: dict[str, str] = field(default_factory=dict)


def _token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_secrets(path: Path) -> LocalSecrets:
    """Read `path`, generating whatever is missing (and only that), then save it back."""
    raw: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    stored = raw.get("passwords")
    passwords = dict(stored) if isinstance(stored, dict) else {}
    changed = not path.exists()
    for name in PASSWORD_NAMES:
        if not passwords.get(name):
            passwords[name] = _token(24)
            changed = True
    values: dict[str, str] = {}
    for key in ("admin_api_key", "internal_auth_secret"):
        value = raw.get(key)
        if not isinstance(value, str) or len(value) < 32:
            value, changed = _token(32), True
        values[key] = value
    stored_nats = raw.get("nats_passwords")
    nats_passwords = dict(stored_nats) if isinstance(stored_nats, dict) else {}
    for name in NATS_USERS:
        if not nats_passwords.get(name):
            nats_passwords[name] = _token(24)
            changed = True
    known = {"passwords", "admin_api_key", "internal_auth_secret", "nats_passwords"}
    result = LocalSecrets(
        passwords=passwords,
        extra={k: v for k, v in raw.items() if k not in known},
        nats_passwords=nats_passwords,
        **values,
    )
    if changed:
        save_secrets(path, result)
    return result


def save_secrets(path: Path, value: LocalSecrets) -> None:
    body = asdict(value)
    body.update(body.pop("extra"))
    write_private(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def ensure_jwt_key(path: Path) -> Path:
    """Create an Ed25519 signing key (PEM, PKCS8, mode 0600) at `path` unless one exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    write_private(path, pem)
    return path
