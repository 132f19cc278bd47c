"""Hostile requests derived from an OpenAPI document: one wrong value at a time.

From each operation's parameters and JSON body schema: a NUL in every string, integers
past 64 bits in every integer, `"1"`, `1.0` and `true` for every body integer, `"true"`
and `1` for every body boolean, and an unknown field in every body object, each in an
otherwise valid request, with the field that the 422 must name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

NUL = "a\x00b"
TOO_BIG = (2**63, 10**30)
NOT_INTEGERS: tuple[Any, ...] = ("1", 1.0, True)
NOT_BOOLEANS: tuple[Any, ...] = ("true", 1)
UNKNOWN = "unexpected_field"
METHODS = ("get", "put", "post", "patch", "delete")

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Probe:
    """One request that must answer 422 naming `field`."""

    method: str
    url: str
    field: str
    what: str
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.url} with {self.what} in {self.field}"


class Document:
    """An OpenAPI document, its `$ref`s resolved on the way."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, item in self.doc["paths"].items():
            for method in METHODS:
                if method in item:
                    yield method.upper(), path, item[method]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def branches(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """The non-null alternatives of a schema (anyOf/oneOf flattened)."""
        schema = self.resolve(schema)
        either = schema.get("anyOf") or schema.get("oneOf")
        if either is None:
            return [] if schema.get("type") == "null" else [schema]
        return [b for alternative in either for b in self.branches(alternative)]

    def body_schema(self, operation: dict[str, Any]) -> dict[str, Any] | None:
        content = operation.get("requestBody", {}).get("content", {})
        json = content.get("application/json")
        return None if json is None else self.resolve(json["schema"])

    def valid(self, schema: dict[str, Any]) -> Any:
        """A value the schema accepts (its first alternative, every property filled in)."""
        s = self.branches(schema)[0]
        if "const" in s or "enum" in s:
            return s.get("const", (s.get("enum") or [None])[0])
        kind = s.get("type")
        if kind == "object":
            return {name: self.valid(sub) for name, sub in s.get("properties", {}).items()}
        if kind == "array":
            return [self.valid(s["items"])] * max(s.get("minItems", 1), 1)
        if kind == "integer":
            least = max(s.get("minimum", 1), 1)
            return min(least, s.get("maximum", least))
        if kind == "boolean":
            return False
        if s.get("format") == "uuid":
            return str(uuid.uuid4())
        if s.get("format") == "date-time":
            return datetime.now(UTC).isoformat()
        return "a" * max(s.get("minLength", 1), 1)

    def bad(self, schema: dict[str, Any]) -> Iterator[tuple[Path, Any, str]]:
        """(where, a whole replacement value with one wrong part, what is wrong) in a body."""
        for s in self.branches(schema):
            kind = s.get("type")
            if kind == "object":
                yield from self._bad_object(s)
            elif kind == "array":
                for where, value, what in self.bad(s["items"]):
                    yield (0, *where), [value], what
            elif kind == "string":
                yield (), NUL, "a NUL"
            elif kind == "integer":
                yield from (((), v, f"integer {v!r}") for v in (*TOO_BIG, *NOT_INTEGERS))
            elif kind == "boolean":
                yield from (((), v, f"boolean {v!r}") for v in NOT_BOOLEANS)

    def _bad_object(self, s: dict[str, Any]) -> Iterator[tuple[Path, Any, str]]:
        base = self.valid(s)
        properties = s.get("properties")
        if properties:
            yield (UNKNOWN,), base | {UNKNOWN: 1}, "an unknown field"
            for name, sub in properties.items():
                for where, value, what in self.bad(sub):
                    yield (name, *where), base | {name: value}, what
        elif isinstance(s.get("additionalProperties"), dict):  # a free-form map
            for where, value, what in self.bad(s["additionalProperties"]):
                yield ("key", *where), {"key": value}, what

    def probes(self) -> Iterator[Probe]:
        for method, path, operation in self.operations():
            yield from self._probes_of(method, path, operation)

    def _probes_of(self, method: str, path: str, operation: dict[str, Any]) -> Iterator[Probe]:
        params = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
        values = {p["name"]: str(self.valid(p["schema"])) for p in params
                  if p["in"] == "path" or p.get("required")}
        schema = self.body_schema(operation)
        body = None if schema is None else self.valid(schema)

        def probe(name: str, value: str, what: str, *, where: str) -> Probe:
            given = values | {name: value}
            url = path.format(**{p["name"]: quote(given[p["name"]], safe="")
                                 for p in params if p["in"] == "path"})
            query = {p["name"]: given[p["name"]] for p in params
                     if p["in"] == "query" and p["name"] in given}
            return Probe(method, url, name, f"{what} ({where})", query, body)

        for p in params:
            for s in self.branches(p["schema"]):
                if s.get("type") == "string":
                    yield probe(p["name"], NUL, "a NUL", where=p["in"])
                elif s.get("type") == "integer":
                    for v in TOO_BIG:
                        yield probe(p["name"], str(v), f"integer {v}", where=p["in"])
        if schema is not None:
            plain = path.format(**{p["name"]: quote(values[p["name"]], safe="")
                                   for p in params if p["in"] == "path"})
            for where, value, what in self.bad(schema):
                name = ".".join(str(part) for part in where)
                yield Probe(method, plain, name, f"{what} (body)", {}, value)

    def subschemas(self, schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The schema and every schema inside it, resolved."""
        schema = self.resolve(schema)
        yield schema
        inner = [*schema.get("properties", {}).values(), *schema.get("anyOf", []),
                 *schema.get("oneOf", [])]
        inner += [schema[k] for k in ("items", "additionalProperties")
                  if isinstance(schema.get(k), dict)]
        for sub in inner:
            yield from self.subschemas(sub)

    def input_schemas(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, schema) of every parameter and every JSON body, nested schemas included."""
        for method, path, operation in self.operations():
            for p in operation.get("parameters", []):
                for s in self.subschemas(p["schema"]):
                    yield f"{method} {path} {p['in']} {p['name']}", s
            body = self.body_schema(operation)
            for s in self.subschemas(body) if body is not None else ():
                yield f"{method} {path} body {s.get('title', '')}", s

    def header_names(self) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """Each header parameter, with the first operation (method, path, operation) of it."""
        found: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for method, path, operation in self.operations():
            for p in operation.get("parameters", []):
                if p["in"] == "header":
                    found.setdefault(p["name"], (method, path, operation))
        return found


def names(field: str, errors: list[dict[str, Any]]) -> bool:
    """Whether an error names `field`. The member of a union that was tried may be named
    too: `amount.Money.amount` names `amount.amount`, `amount.fen` names `amount`."""
    want = field.split(".")
    for error in errors:
        got = str(error.get("field", "")).split(".")
        rest = iter(got)
        if got[0] == want[0] and all(part in rest for part in want):
            return True
    return False
