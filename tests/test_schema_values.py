"""Values generated from JSON Schemas, checked by an independent validator (jsonschema)."""

from __future__ import annotations

import copy
import json
import random
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from llmsim.schema_values import MAX_REF_DEPTH, generate


def check(schema: Any, seed: int = 0) -> Any:
    value = generate(schema, random.Random(seed))
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)
    return value


# --- random schemas ------------------------------------------------------------------------------

NAMES = st.sampled_from(["id", "name", "city", "count", "tags", "price", "note", "kind", "a-b", "$x"])
FORMATS = ["date-time", "date", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname"]
PATTERNS = [
    r"^[A-Z]{3}-\d{4}$",
    r"^\+?[0-9]{7,12}$",
    r"^(red|green|blue)$",
    r"[a-z]+@[a-z]+\.com",
    r"^\w+$",
    r"^[^@\s]+$",
    r"^(\d{1,3}\.){3}\d{1,3}$",
    r"^#[0-9a-fA-F]{6}$",
    r"^[a-z0-9-]{3,16}$",
    r"^v\d+(\.\d+){0,2}$",
    r"^(?P<x>ab)c(?P=x)$",
    r"(?i)^[A-F]+$",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-100, 100), st.text("abc xyz", max_size=6), st.floats(-10, 10)
)


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    kind = draw(st.sampled_from(["plain", "min", "max", "both", "format", "pattern"]))
    low = draw(st.integers(0, 30))
    if kind in ("min", "both"):
        schema["minLength"] = low
    if kind in ("max", "both"):
        schema["maxLength"] = low + draw(st.integers(0, 15))
    if kind == "format":
        schema["format"] = draw(st.sampled_from(FORMATS))
    if kind == "pattern":
        schema["pattern"] = draw(st.sampled_from(PATTERNS))
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    integer = draw(st.booleans())
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    step = draw(st.sampled_from([None, 2, 3, 10] if integer else [None, 2, 0.5, 0.25, 0.1, 0.01]))
    if integer:
        low: float = draw(st.integers(-(10**6), 10**6))
        span: float = draw(st.integers(0, 10**4))
    else:
        low = draw(st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6), st.just(-1e300)))
        span = draw(st.floats(0.001, 1e4))
    if step is not None:
        schema["multipleOf"] = step
        span = max(span, 60 * step)
    lower = draw(st.sampled_from([None, "minimum", "exclusiveMinimum"]))
    upper = draw(st.sampled_from([None, "maximum", "exclusiveMaximum"]))
    if integer and (lower == "exclusiveMinimum" or upper == "exclusiveMaximum"):
        span = max(span, 2 + (step or 0))
    if lower:
        schema[lower] = low
    if upper:
        schema[upper] = max(low + span, low + abs(low) * 1e-6)  # still above low for huge lows
    return schema


BASE = st.one_of(
    strings(),
    numbers(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({}),
    st.builds(lambda v: {"enum": v}, st.lists(SCALARS, min_size=1, max_size=4)),
    st.builds(lambda v: {"type": "string", "enum": v}, st.lists(st.text("abcd", max_size=5), min_size=1)),
    st.builds(lambda v: {"const": v}, SCALARS),
    st.just({"type": ["string", "null"], "maxLength": 8}),
    st.just({"type": ["integer", "string"], "minimum": 5, "minLength": 3}),
)


@st.composite
def objects(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    props = draw(st.dictionaries(NAMES, children, max_size=4))
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = [n for n in props if draw(st.booleans())]
    extra = draw(st.sampled_from(["absent", "false", "true", "schema"]))
    if extra in ("false", "true"):
        schema["additionalProperties"] = extra == "true"
    elif extra == "schema":
        schema["additionalProperties"] = draw(children)
        schema["minProperties"] = draw(st.integers(0, len(props) + 2))
    return schema


@st.composite
def arrays(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": draw(children)}
    low = draw(st.integers(0, 3))
    if draw(st.booleans()):
        schema["minItems"] = low
    if draw(st.booleans()):
        schema["maxItems"] = low + draw(st.integers(0, 3))
    if draw(st.booleans()):
        schema["prefixItems"] = draw(st.lists(children, min_size=1, max_size=2))
    return schema


def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    any_of = st.lists(children, min_size=1, max_size=3).map(lambda v: {"anyOf": v})
    return st.one_of(objects(children), arrays(children), any_of)


def schemas(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, extend, max_leaves=10)


# Every definition exists, so the $ref leaves always resolve; names need JSON-pointer escaping.
DEF_NAMES = {"a": "a", "c~d": "c~0d", "e/f": "e~1f"}
DEFS = st.fixed_dictionaries({name: schemas(BASE) for name in DEF_NAMES})
ROOTS = {
    keyword: schemas(
        st.one_of(BASE, st.sampled_from([{"$ref": f"#/{keyword}/{p}"} for p in DEF_NAMES.values()]))
    )
    for keyword in ("$defs", "definitions")
}


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A root schema that may $ref into its own $defs (or draft-7 definitions)."""
    keyword = draw(st.sampled_from(sorted(ROOTS)))
    root = draw(ROOTS[keyword])
    return {**root, keyword: draw(DEFS)} if isinstance(root, dict) else root


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.integers(0, 2**32))
def test_random_schemas_give_valid_values(schema: dict[str, Any], seed: int) -> None:
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(generate(schema, random.Random(seed)))


# --- realistic schemas -----------------------------------------------------------------------------

WEATHER = {  # OpenAI's function-calling example, strict mode
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}

ORDER = {
    "type": "object",
    "$defs": {
        "money": {"type": "number", "minimum": 0, "multipleOf": 0.01},
        "line": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 20},
                "unit_price": {"$ref": "#/$defs/money"},
            },
            "required": ["sku", "quantity", "unit_price"],
            "additionalProperties": False,
        },
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string", "minLength": 3, "maxLength": 40},
                "city": {"type": "string"},
                "postcode": {"type": "string", "pattern": r"^\d{4}-\d{3}$"},
                "country": {"type": "string", "enum": ["PT", "ES", "FR"]},
            },
            "required": ["street", "city", "postcode", "country"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "order_id": {"type": "string", "format": "uuid"},
        "created_at": {"type": "string", "format": "date-time"},
        "customer": {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "name": {"type": "string", "minLength": 1},
                "phone": {"type": ["string", "null"]},
            },
            "required": ["email", "name", "phone"],
            "additionalProperties": False,
        },
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1, "maxItems": 5},
        "shipping": {"$ref": "#/$defs/address"},
        "status": {"enum": ["pending", "paid", "shipped"]},
        "total": {"$ref": "#/$defs/money"},
        "notes": {"type": "string", "maxLength": 100},
    },
    "required": ["order_id", "created_at", "customer", "lines", "shipping", "status", "total"],
    "additionalProperties": False,
}

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "maxLength": 12},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((depth(v) for v in value), default=0)
    return 0


def test_weather_arguments_cover_the_enum() -> None:
    values = [check(WEATHER, seed) for seed in range(50)]
    assert {v["unit"] for v in values} == {"celsius", "fahrenheit"}
    assert all(v["location"] for v in values)


def test_nested_order() -> None:
    for seed in range(50):
        order = check(ORDER, seed)
        assert 1 <= len(order["lines"]) <= 5
        assert re.fullmatch(r"[A-Z]{3}-\d{4}", order["lines"][0]["sku"])
    assert json.dumps(order)  # plain JSON types only


def test_recursive_tree_is_bounded() -> None:
    depths = [depth(check(TREE, seed)) for seed in range(50)]
    assert max(depths) <= MAX_REF_DEPTH + 2
    assert max(depths) > 1  # it does recurse


def test_recursion_through_the_root_and_anyof_null() -> None:
    root = {"type": "object", "properties": {"sub": {"$ref": "#"}}, "required": ["sub"]}
    linked = {
        "definitions": {
            "item": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/definitions/item"}, {"type": "null"}]},
                },
                "required": ["v", "next"],
            }
        },
        "$ref": "#/definitions/item",
    }
    nullable = {"type": "object", "nullable": True, "properties": {"up": {"$ref": "#"}}, "required": ["up"]}
    for seed in range(20):
        assert depth(generate(root, random.Random(seed))) <= 45  # unsatisfiable: stops anyway
        assert depth(check(linked, seed)) <= MAX_REF_DEPTH + 2
        assert depth(generate(nullable, random.Random(seed))) <= MAX_REF_DEPTH + 2


def test_one_of_matches_exactly_one_branch() -> None:
    overlapping = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    union = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "card"}, "last4": {"type": "string", "pattern": r"^\d{4}$"}},
                "required": ["kind", "last4"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"kind": {"const": "iban"}, "iban": {"type": "string", "minLength": 15}},
                "required": ["kind", "iban"],
                "additionalProperties": False,
            },
        ]
    }
    kinds = set()
    for seed in range(30):
        value = check(overlapping, seed)
        assert not float(value).is_integer()
        kinds.add(check(union, seed)["kind"])
    assert kinds == {"card", "iban"}


def test_all_of_is_merged() -> None:
    schema = {
        "allOf": [
            {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 5}, "b": {"type": "string"}},
                "additionalProperties": False,
            },
            {"required": ["a"], "properties": {"a": {"maximum": 7}, "c": {"type": "string"}}},
            {"$ref": "#/$defs/named"},
        ],
        "$defs": {"named": {"properties": {"b": {"minLength": 2}}, "required": ["b"]}},
    }
    for seed in range(30):
        value = check(schema, seed)
        assert 5 <= value["a"] <= 7 and len(value["b"]) >= 2 and "c" not in value


def test_strings_formats_and_patterns() -> None:
    for seed in range(20):
        for fmt in FORMATS:
            check({"type": "string", "format": fmt}, seed)
        for pattern in PATTERNS:
            check({"type": "string", "pattern": pattern}, seed)
        assert len(check({"type": "string", "minLength": 200, "maxLength": 201}, seed)) >= 200
        assert check({"type": "string", "maxLength": 0}, seed) == ""


def test_numbers_stay_modest() -> None:
    for seed in range(30):
        assert 0 <= check({"type": "integer"}, seed) <= 100
        assert abs(check({"type": "number", "minimum": -1e300, "maximum": 1e300}, seed)) <= 100
        assert check({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e-9}, seed) > 0
        assert check({"type": "integer", "minimum": 0.5, "maximum": 10, "multipleOf": 2.5}, seed) in (5, 10)


def test_arrays_unique_items_and_tuples() -> None:
    unique = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 5},
        "minItems": 4,
        "uniqueItems": True,
    }
    pair = {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": False,
        "minItems": 2,
    }
    draft7 = {"type": "array", "items": [{"type": "boolean"}], "additionalItems": False}
    for seed in range(30):
        assert len(set(check(unique, seed))) >= 4
        assert [type(v) for v in check(pair, seed)] == [str, int]
        assert len(generate(draft7, random.Random(seed))) <= 1


@pytest.mark.parametrize(
    "schema",
    [
        {},
        True,
        {"description": "anything"},
        {"type": ["string", "null"]},
        {"type": "string", "nullable": True},
        {"not": {"type": "string"}},
        {"type": "object", "minProperties": 2, "maxProperties": 3},
        {
            "type": "object",
            "patternProperties": {"^n_": {"type": "integer"}},
            "properties": {"n_a": {"minimum": 3}},
            "required": ["n_a"],
        },
        {"type": "object", "properties": {"a": {}, "b": {}}, "dependentRequired": {"a": ["b"]}},
        {"anyOf": [{"type": "string", "minLength": 2}, {"type": "integer"}], "maxLength": 4},
        {"enum": [1, "one", True, None], "type": "string"},
    ],
)
def test_edge_schemas(schema: Any) -> None:
    for seed in range(20):
        check(schema, seed)


def test_same_seed_same_value() -> None:
    snapshot = copy.deepcopy(ORDER)
    first = [generate(ORDER, random.Random(seed)) for seed in range(10)]
    again = [generate(ORDER, random.Random(seed)) for seed in range(10)]
    assert first == again
    assert len({json.dumps(v, sort_keys=True) for v in first}) == 10
    assert snapshot == ORDER  # the schema is not touched


def test_fast_enough_for_the_hot_path() -> None:
    start = time.perf_counter()
    for seed in range(500):
        generate(ORDER, random.Random(seed))
    assert time.perf_counter() - start < 2.5  # ~0.1 ms each in practice; generous for slow CI
