"""JSON schemas from requests: checked for validity and for bounds before anything compiles them.

A schema that is deeply nested or huge is refused here with a 400 naming the field, before a
grammar is built from it: grammar size is what sampling pays for at every step."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from service.errors import InvalidRequestError

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_ENUM_VALUES = 1024  # across the whole schema
MAX_GRAMMAR_BYTES = 64 * 1024


def nesting_depth(value: Any, limit: int) -> int:
    """Depth of nested lists and dicts, counted without recursion; stops counting past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _enum_values(schema: Any) -> int:
    count = 0
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("enum"), list):
                count += len(item["enum"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def check_schema(schema: Any, param: str, what: str) -> None:
    """A 400 naming `param` unless `schema` is a valid JSON Schema within the bounds above."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{what} must be a JSON Schema object, not {type(schema).__name__}", param=param)
    depth = nesting_depth(schema, MAX_SCHEMA_DEPTH)
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidRequestError(f"{what} is nested more than {MAX_SCHEMA_DEPTH} levels deep; flatten it", param=param)
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise InvalidRequestError(f"{what} is {size} bytes of JSON, more than the {MAX_SCHEMA_BYTES} allowed", param=param)
    enum_values = _enum_values(schema)
    if enum_values > MAX_ENUM_VALUES:
        raise InvalidRequestError(
            f"{what} lists {enum_values} enum values, more than the {MAX_ENUM_VALUES} allowed", param=param
        )
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        raise InvalidRequestError(f"{what} is not a valid JSON Schema: {error.message}", param=param) from None


def check_grammar(grammar: str, param: str) -> None:
    size = len(grammar.encode("utf-8", "surrogatepass"))
    if size > MAX_GRAMMAR_BYTES:
        raise InvalidRequestError(f"the grammar is {size} bytes, more than the {MAX_GRAMMAR_BYTES} allowed", param=param)
