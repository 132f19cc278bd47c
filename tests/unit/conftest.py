"""Fixtures shared by the unit tests."""

from __future__ import annotations

from typing import Any

import jwt
import pytest


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature was checked (not answered from the verified-token memory)."""
    seen: list[str] = []
    real_decode = jwt.decode

    def counting_decode(encoded: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(encoded)
        return real_decode(encoded, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return seen
