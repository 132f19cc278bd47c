"""RFC 9457 problem+json errors with stable `type` slugs."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common import inputs, telemetry

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"

_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation error"),
    429: ("rate-limited", "Too many requests"),
    503: ("overloaded", "Service overloaded"),
}


class Problem(Exception):
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.extra = extra


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"{what} not found")


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


# The database (Postgres, or the pooler in front of it) refused or lost the connection: the
# request may be sent again, with the same Idempotency-Key, once it is back.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,  # refused or reset: the server or pooler is down or restarting
    asyncpg.PostgresConnectionError,  # class 08, e.g. a pooler's lost server connection
    asyncpg.CannotConnectNowError,  # Postgres starting or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
)


def validation_error(field: str, message: str) -> Problem:
    return Problem(
        422, "validation-error", "Validation error", f"{field}: {message}",
        errors=[{"field": field, "message": message}], field=field,
    )


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    trace_id = telemetry.current_trace_id()
    if trace_id:
        body["trace_id"] = trace_id
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "trace_id": {"type": "string"},
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these problem statuses."""
    return {s: {"description": _TITLES.get(s, ("error", "Error"))[1]} for s in statuses}


def document_problems(app: FastAPI) -> None:
    """Document every 4xx/5xx answer as what `install` sends: problem+json (RFC 9457);
    integer bounds are given back their exact values (see `inputs.exact_integer_bounds`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        ref = {"$ref": "#/components/schemas/Problem"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                for status, response in operation.get("responses", {}).items():
                    if str(status)[:1] in ("4", "5"):
                        response["content"] = {PROBLEM_JSON: {"schema": ref}}
        inputs.exact_integer_bounds(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "")


def install(app: FastAPI) -> None:
    """Route every error the app can raise through problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.slug, exc.title, exc.detail,
            instance=request.url.path, headers=exc.headers, **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            422, "validation-error", "Validation error", detail,
            instance=request.url.path, errors=errors,
            field=errors[0]["field"] if errors else None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _TITLES.get(exc.status_code, ("error", "Error"))
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return problem_response(
            exc.status_code, slug, title, detail,
            instance=request.url.path, headers=getattr(exc, "headers", None),
        )

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", extra={"path": request.url.path, "error": repr(exc)})
        return problem_response(
            503, "unavailable", "Database unavailable",
            "the database could not be reached; retry with the same Idempotency-Key",
            instance=request.url.path, headers={"Retry-After": "1"},
        )

    for exc_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_type, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(
            500, "internal-error", "Internal error",
            "the server failed; the request can be retried with the same Idempotency-Key",
            instance=request.url.path,
        )
