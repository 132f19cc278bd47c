"""The floor of a refusal at the door: a bare ASGI app under uvicorn (as the services run)
that answers every request with a fixed 429, no framework, no routing, no body read.

What it costs per request is what any refusal in a Python process costs at least (HTTP
parsing, the event loop, the answer): the flash sale prints it beside orders' CPU per
decided checkout.
"""

from __future__ import annotations

from typing import Any

_HEADERS = [(b"content-type", b"application/problem+json"), (b"retry-after", b"1")]
_BODY = b'{"type":"/problems/rate-limited","title":"Too many requests","status":429}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    healthz = scope["path"] == "/healthz"
    await send({"type": "http.response.start", "status": 200 if healthz else 429,
                "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}" if healthz else _BODY})
