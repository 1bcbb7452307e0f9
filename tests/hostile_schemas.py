"""Schemas that once froze an instance, shared by the unit tests of llmsim/schema_values.py and
the end-to-end hostile-input table."""

from __future__ import annotations

from typing import Any


def wrap(schema: Any, defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``schema`` as the one required property of an object, as tools and structured outputs take."""
    wrapped: dict[str, Any] = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return {**wrapped, "$defs": defs} if defs else wrapped


def binary_tree() -> dict[str, Any]:
    """A recursive $ref with both children required: no finite value exists."""
    node = {
        "type": "object",
        "properties": {"left": {"$ref": "#/$defs/node"}, "right": {"$ref": "#/$defs/node"}},
        "required": ["left", "right"],
    }
    return wrap({"$ref": "#/$defs/node"}, {"node": node})


def nested_min_items(levels: int, size: int) -> dict[str, Any]:
    """Arrays of arrays, each at least ``size`` long: ``size ** levels`` integers."""
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema, "minItems": size}
    return wrap(schema)
