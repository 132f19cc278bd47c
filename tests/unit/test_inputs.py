"""The strict-input types: bounds that compose, and what the OpenAPI document says of them."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from services.common.inputs import INT64_MAX, Int64, StrictModel, exact_integer_bounds, parse_int64


class Line(StrictModel):
    quantity: Int64 = Field(ge=1, le=100)
    points: Int64 = Field(default=0, ge=0)


@pytest.mark.parametrize("body", [
    {"quantity": 101}, {"quantity": 0}, {"quantity": 1, "points": -1},
    {"quantity": 2**63}, {"quantity": 1, "points": 2**63}, {"quantity": True},
    {"quantity": "1"}, {"quantity": 1.0}, {"quantity": 1, "extra": 1},
])  # fmt: skip
def test_a_business_bound_and_the_64_bit_bound_both_hold(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Line.model_validate(body)


def test_the_schema_shows_the_tighter_bound_and_int64() -> None:
    properties = Line.model_json_schema()["properties"]
    assert properties["quantity"] | {"title": ""} == {
        "type": "integer", "format": "int64", "minimum": 1, "maximum": 100, "title": ""}
    assert (properties["points"]["minimum"], properties["points"]["maximum"]) == (0, INT64_MAX)


def test_openapi_float_bounds_become_exact_integers_again() -> None:
    document = {"a": [{"type": "integer", "maximum": float(INT64_MAX), "minimum": 1.0},
                      {"type": "number", "maximum": 1.5}]}
    exact_integer_bounds(document)
    assert document["a"][0] == {"type": "integer", "maximum": INT64_MAX, "minimum": 1}
    assert document["a"][1]["maximum"] == 1.5


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("42", 42), (str(INT64_MAX), INT64_MAX), (str(INT64_MAX + 1), None),
    ("²", None), ("\u0661", None), (" 1", None), ("1_0", None), ("-1", None), ("", None),
])  # fmt: skip
def test_parse_int64_takes_ascii_digits_within_64_bits(text: str, value: int | None) -> None:
    assert parse_int64(text) == value
