"""Strict request input, one rule for every service: the types of bodies and parameters.

What a client sends must be what the API says, or answer 422 naming the field before any
side effect: a wrong JSON type (`"1"`, `1.0` or `true` for an integer), an unknown field,
a NUL character (Postgres text and jsonb cannot hold one) or an integer past 64 bits
(Postgres bigint, protobuf int64 and the request fingerprint stop there). Strictness is
per field: FastAPI validates the *parsed* JSON in pydantic's python mode, where a
model-wide `strict=True` would also refuse UUIDs and datetimes given as strings.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StrictStr,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters")
    return value


def _within_64_bits(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise PydanticCustomError("int64", "must fit in 64 bits ({ge} to {le})",
                                  {"ge": INT64_MIN, "le": INT64_MAX})
    return value


class _SixtyFourBits:
    """The 64-bit range as a check of its own rather than `ge`/`le` constraints: those would
    replace a field's tighter business bound (`Int64 = Field(ge=1, le=100)`), not add to it."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_within_64_bits, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["minimum"] = max(json_schema.get("minimum", INT64_MIN), INT64_MIN)
        json_schema["maximum"] = min(json_schema.get("maximum", INT64_MAX), INT64_MAX)
        json_schema["format"] = "int64"
        return json_schema


NoNul = AfterValidator(_no_nul)
"""The NUL check alone, placed after a type's own constraints so that their messages stay
plain: `Annotated[StrictStr, StringConstraints(max_length=40), NoNul]`."""

Text = Annotated[StrictStr, NoNul]
"""Any text a client sends (body field, query, path or header): a string, without NUL."""

Int64 = Annotated[StrictInt, _SixtyFourBits()]
"""An integer of a JSON body: a JSON integer (not `"1"`, `1.0` or `true`) within 64 bits.
A business bound composes: `quantity: Int64 = Field(ge=1, le=100)`."""

QueryInt64 = Annotated[int, Ge(INT64_MIN), Le(INT64_MAX), Field(json_schema_extra={
    "format": "int64"})]
"""An integer of a query string (always text there, so parsed, not strict) within 64 bits.
Tighter bounds go in the parameter: `Annotated[QueryInt64, Query(ge=1, le=100)]`."""

Bool = StrictBool
"""A boolean of a JSON body: `true` or `false`, not `"true"` or `1`."""


class StrictModel(BaseModel):
    """A request body: an unknown field is refused (422 naming it), never ignored."""

    model_config = ConfigDict(extra="forbid")


def parse_int64(text: str) -> int | None:
    """A non-negative integer in ASCII digits that fits in 64 bits (a cursor, say), or None."""
    if _DIGITS.fullmatch(text) is None or int(text) > INT64_MAX:
        return None
    return int(text)


def exact_integer_bounds(node: Any) -> None:
    """Give integer schemas of an OpenAPI document their bounds as integers again.

    FastAPI passes the document through a model whose `minimum`/`maximum` are floats, and
    float(2**63 - 1) is 2**63: a generated client would believe one more value is valid."""
    if isinstance(node, list):
        for item in node:
            exact_integer_bounds(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "integer":
        for key in ("minimum", "maximum"):
            if isinstance(node.get(key), float):
                node[key] = min(max(int(node[key]), INT64_MIN), INT64_MAX)
    for value in node.values():
        exact_integer_bounds(value)
