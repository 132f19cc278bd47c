"""The FastAPI hello-world ceiling: the same server stack as a service, and no work at all."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI(title="hello")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.get("/hello")
async def hello() -> Response:
    return Response(b'{"hello":"world"}', media_type="application/json")
