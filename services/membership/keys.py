"""Token signing keys: the current Ed25519 key, keys kept for rotation, and the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common import auth
from services.common.errors import unauthorized


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK of a public key, with its RFC 7638 thumbprint as `kid`."""
    x = _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638: the required members only, sorted, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "alg": auth.ALGORITHM, "use": "sig",
            "kid": kid}


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file holding either half of the pair."""
    data = path.read_bytes()
    key: Any
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the token signing key must be an Ed25519 private key")
    return key


@dataclass(frozen=True)
class KeyRing:
    """Signs with `signing_key`; verifies with the published keys; refuses retired kids."""

    signing_key: Ed25519PrivateKey
    kid: str
    published: dict[str, Ed25519PublicKey]
    retired: frozenset[str]

    @classmethod
    def build(
        cls,
        signing_key: Ed25519PrivateKey,
        previous: Iterable[Ed25519PublicKey] = (),
        retired: Iterable[Ed25519PublicKey] = (),
    ) -> KeyRing:
        retired_kids = frozenset(public_jwk(k)["kid"] for k in retired)
        kid = public_jwk(signing_key.public_key())["kid"]
        if kid in retired_kids:
            raise ValueError("the token signing key is listed as retired; configure a new one")
        published = {kid: signing_key.public_key()}
        for key in previous:
            prev_kid = public_jwk(key)["kid"]
            if prev_kid not in retired_kids:
                published[prev_kid] = key
        return cls(signing_key, kid, published, retired_kids)

    @classmethod
    def from_files(
        cls, signing: Path, previous: Iterable[Path] = (), retired: Iterable[Path] = ()
    ) -> KeyRing:
        return cls.build(
            load_private_key(signing),
            [load_public_key(p) for p in previous],
            [load_public_key(p) for p in retired],
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(key) for key in self.published.values()]}

    def access_token(
        self, *, member_id: uuid.UUID, tier: str, now: datetime, ttl: timedelta
    ) -> str:
        claims = {
            "iss": auth.ISSUER,
            "aud": auth.AUDIENCE,
            "sub": str(member_id),
            "typ": "access",
            "tier": tier,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
        }
        return jwt.encode(claims, self.signing_key, algorithm=auth.ALGORITHM,
                          headers={"kid": self.kid})


class LocalVerifier(auth.JwksVerifier):
    """The shared verification rules (pinned algorithm, iss, aud, exp, typ), keys in hand."""

    def __init__(self, ring: KeyRing) -> None:
        super().__init__(jwks_url="local:membership")
        self.ring = ring

    async def key_for(self, kid: str) -> Any:
        key = self.ring.published.get(kid)
        if key is None or kid in self.ring.retired:
            raise unauthorized("token signed by an unknown or retired key")
        return key
