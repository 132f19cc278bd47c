"""RFC 9457 problem+json errors with stable `type` slugs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
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


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "title": "Problem",
        "description": "RFC 9457 problem details. `type` ends in a stable slug "
                       "(`/problems/out-of-stock`); a problem may carry more members "
                       "(`sku_id`, `order_id`, `order`).",
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "description": "`/problems/<slug>`"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "the request's path"},
            "trace_id": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"},
                       "description": "each invalid field (validation, missing header)"},
            "field": {"type": "string", "description": "the first of `errors`, or the field "
                      "a conflict is about"},
        },
    },
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": "string", "description": "dotted path (`items.0.quantity`), "
                      "parameter or header name"},
            "message": {"type": "string"},
        },
    },
}
# What each problem status tells a client, unless the route says more (`problems(notes=)`).
_MEANINGS = {
    400: "a required header is missing (`Idempotency-Key`)",
    401: "missing or invalid credentials",
    402: "payment required",
    404: "not found, or not the caller's",
    409: "conflicts with the current state",
    413: "request body over the size limit",
    422: "invalid input: `errors` names each field",
    429: "too many requests; retry after `Retry-After` seconds",
    503: "overloaded or a dependency unavailable; retry after `Retry-After` seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}
# Who may call is decided by these headers, and a missing or wrong one answers 401.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-admin-key", "x-api-key"})


def problems(
    *statuses: int,
    notes: Mapping[int, str] | None = None,
    members: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the problems a route answers beyond the ones every route shares
    (`document_problems` adds those): problem+json, described by `notes` where the route
    means more than the status does, with `members` (name -> schema) a problem adds."""
    return {s: _problem_response(s, (notes or {}).get(s), (members or {}).get(s))
            for s in statuses}


def _problem_response(
    status: int, note: str | None = None, members: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = PROBLEM_REF
    if members:
        schema = {"allOf": [PROBLEM_REF, {"type": "object", "properties": dict(members)}]}
    response: dict[str, Any] = {
        "description": note or _MEANINGS.get(status, _TITLES.get(status, ("", "Error"))[1]),
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def shared_problems(operation: Mapping[str, Any]) -> list[int]:
    """The problems an operation can answer through what every route shares: shedding and
    a lost database (503), the body limit (413), strict input (422), the credential
    headers (401) and a required header left out (400)."""
    params = operation.get("parameters", [])
    headers = [p for p in params if p["in"] == "header"]
    statuses = [503]
    if "requestBody" in operation:
        statuses.append(413)
    if params or "requestBody" in operation:
        statuses.append(422)
    if any(h["name"].lower() in CREDENTIAL_HEADERS for h in headers):
        statuses.append(401)
    if any(h.get("required") for h in headers):
        statuses.append(400)
    return statuses


def document_problems(app: FastAPI) -> None:
    """Document every answer an operation can give: its own problems (`problems`) and the
    shared ones (`shared_problems`), each as what `install` sends, problem+json (RFC 9457)
    with its schema; integer bounds get back their exact values
    (`inputs.exact_integer_bounds`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, not ours
            components.pop(name, None)
        components.update(_SCHEMAS)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                _document_operation(operation)
        inputs.exact_integer_bounds(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status in shared_problems(operation):
        responses.setdefault(str(status), _problem_response(status))
    for status, response in responses.items():
        if status[:1] not in ("4", "5"):
            continue
        content = response.setdefault("content", {})
        content.pop("application/json", None)  # FastAPI's own 422 model
        if not content.get(PROBLEM_JSON, {}).get("schema"):
            response.update(_problem_response(int(status), response.get("description")))
    operation["responses"] = dict(sorted(responses.items()))


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
        found = exc.errors()
        # A required header left out is a malformed request, not invalid content: 400, as
        # the Idempotency-Key draft asks, before anything of the body is looked at.
        missing = [e for e in found if e.get("type") == "missing"
                   and tuple(e.get("loc", ()))[:1] == ("header",)]
        status, slug, title = 400, "missing-header", "Required header missing"
        if not missing:
            status, slug, title = 422, "validation-error", "Validation error"
        errors = [
            {"field": _field_path(tuple(e.get("loc", ()))),
             "message": "header required" if missing else e.get("msg", "invalid")}
            for e in missing or found
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        first: dict[str, Any] = {"field": errors[0]["field"]} if errors else {}
        return problem_response(
            status, slug, title, detail, instance=request.url.path, errors=errors, **first)

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
