"""A JSON value valid against a JSON Schema: tool-call arguments and structured outputs.

Hand-written rather than a library: ``hypothesis-jsonschema`` is built for tests (slow, and it
shrinks), and ``jsf`` (last release March 2024) compiles each schema into a pydantic model tree,
draws from the global ``random`` (so no determinism from a caller's rng) and pulls in faker, rstr
and smart-open. What OpenAI function and structured-output schemas use fits in one walk over the
schema per call, with no compilation.

Supported: ``type`` (also lists, and OpenAPI's ``nullable``), ``enum``, ``const``, objects
(``properties``, ``required``, ``additionalProperties``, ``patternProperties``, min/max
properties, ``dependentRequired``), arrays (``items``, ``prefixItems``, draft-7 tuple ``items``,
min/max items, ``uniqueItems``), strings (lengths, ``format``, ``pattern``), numbers (bounds,
exclusive bounds, ``multipleOf``), ``anyOf``, ``oneOf`` (the value matches exactly one branch when
a few tries find such a value), ``allOf`` (merged), ``not`` (retried), and local ``$ref``
(``#``, ``#/$defs/...``, ``#/definitions/...``, any JSON pointer in the document).

:func:`check` and :func:`generate` run on the event loop, so both are bounded whatever a client
sends. :func:`check` (at request parsing) refuses, with :class:`SchemaError`, a schema that is malformed (a keyword this
module reads holding the wrong type, an uncompilable ``pattern``, a local ``$ref`` that resolves
to nothing), over the limits OpenAI documents for structured outputs (``MAX_OBJECT_PROPERTIES``,
``MAX_NESTING``, ``MAX_ENUM_VALUES``, ``MAX_NAME_CHARS``, ``LARGE_ENUM``), or asking for more than
a simulator needs to write (``MAX_STRING_LENGTH``, ``MAX_ITEMS``, ``MAX_OUTPUT_BYTES``, ``pattern``
repeats past ``MAX_PATTERN_COST``, ``multipleOf`` outside ``MULTIPLE_OF_RANGE``, subschemas past
``MAX_SUBSCHEMAS`` or ``MAX_SCHEMA_DEPTH``); its cost is linear in the schema. :func:`generate`
spends at most its budget of steps (about a microsecond each: ``GENERATION_BUDGET`` a request,
which callers split among its choices and tool calls), then raises :class:`SchemaError`.

Limits, all best effort rather than errors (except the budget):

- ``pattern``: strings are built from the parsed regex (lookarounds ignored, unbounded repeats
  kept short, going on while ``minLength`` is not met), then checked with the ``regex`` module
  under a timeout (a match that times out counts as no match); a pattern combined with lengths it
  cannot meet, two patterns merged by ``allOf`` (only the first is used), or a pattern only ``regex``
  parses (``\\p{L}``), may give a non-matching string.
- Recursion: past ``MAX_REF_DEPTH`` ``$ref`` expansions on a path, values are minimal (no optional
  properties, ``minItems`` items, non-recursive ``anyOf``/``oneOf`` branches and ``null`` first);
  ``nullable: true`` yields ``null`` only there, since JSON Schema itself ignores the keyword. A
  schema whose required recursion never ends (a list whose ``next`` is required, a tree with both
  children required) raises :class:`SchemaError`, past ``_HARD_DEPTH`` expansions or the budget.
- Unsatisfiable schemas (empty ranges, conflicting ``allOf`` branches, a ``not`` or ``oneOf`` no
  candidate meets) give some value anyway.
- ``MAX_NESTING`` counts property levels in the schema as written, not through ``$ref``.
- Not supported: remote or ``$id``-relative refs (treated as ``{}``), ``#anchor`` refs (refused),
  ``contains``, ``if``/``then``/``else``, ``unevaluated*``, ``propertyNames``, ``dependentSchemas``
  (their subschemas are checked, then ignored).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import re
import reprlib
import string
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

import regex

try:  # Python 3.11+
    from re import _parser as _sre
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]

MAX_REF_DEPTH = 3  # $ref expansions on one path before values turn minimal
_HARD_DEPTH = 40  # $ref expansions on one path: a schema still recursing here has no end
_RETRIES = 200  # candidate values one call may throw away (oneOf, not, patterns, uniqueItems)

# OpenAI's documented limits for structured-output schemas (platform.openai.com/docs/guides/
# structured-outputs, "Objects have limitations on nesting depth and size"), applied to every
# schema: a simulator should refuse what the real API refuses.
MAX_OBJECT_PROPERTIES = 5_000  # property names in the whole schema (also caps minProperties)
MAX_NESTING = 10  # levels of properties within properties
MAX_ENUM_VALUES = 1_000  # enum values in the whole schema
MAX_NAME_CHARS = 120_000  # property and definition names, enum and const values, in characters
LARGE_ENUM = (250, 15_000)  # a string enum of more values than this: at most this many characters

# llmsim's own bounds: what a simulated answer could ever need, far below what would stall the
# event loop. MAX_OUTPUT_BYTES is about MAX_OUTPUT_TOKENS (65,536) of JSON at ~4 bytes a token.
MAX_OUTPUT_BYTES = 256 * 1024  # the smallest value a schema allows, as compact JSON
MAX_STRING_LENGTH = 100_000  # minLength, and the shortest string a pattern matches
MAX_ITEMS = 10_000  # minItems (and minContains)
MAX_PATTERN_COST = 10_000  # pattern characters plus required repeats unrolled, whole schema
MULTIPLE_OF_RANGE = (1e-12, 2.0**53)  # finer steps are float noise; coarser ones skip integers
MAX_SUBSCHEMAS = 20_000  # 4x MAX_OBJECT_PROPERTIES: check() stays within ~50 ms
MAX_SCHEMA_DEPTH = 32  # subschemas within subschemas, any keyword: recursive walks stay shallow
GENERATION_BUDGET = 50_000  # steps of ~1 us a request (~50 ms), shared by its choices and calls
_REGEX_TIMEOUT_S = 0.002  # one candidate match (a slow one is charged its time in steps)

_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim minim veniam quis nostrud exercitation ullamco laboris nisi "
    "aliquip ex ea commodo consequat duis aute irure in voluptate velit esse cillum fugiat nulla"
).split()
_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_SCALARS = ("string", "integer", "boolean")
_ANNOTATIONS = frozenset(
    ("title", "description", "default", "examples", "$comment", "$schema", "$id", "$defs", "definitions")
)
_MIN_KEYS = frozenset(("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"))
_MAX_KEYS = frozenset(("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"))
_INFER = (
    ("object", ("properties", "required", "additionalProperties", "patternProperties", "minProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)
# Where subschemas sit: one, a list of them, or a map of names to them.
_ONE = frozenset(
    (
        "additionalProperties",
        "additionalItems",
        "not",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    )
)
_LISTS = frozenset(("allOf", "anyOf", "oneOf", "prefixItems"))
_MAPS = frozenset(("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"))
_NESTS = frozenset(("properties", "patternProperties", "additionalProperties"))  # a property level
_ONE_SCHEMA, _LIST, _MAP, _ITEMS, _KEYWORD = "one", "list", "map", "items", "keyword"
_COUNTS = {  # keyword: the most llmsim generates (None: no bound needed)
    "minLength": MAX_STRING_LENGTH,
    "maxLength": None,
    "minItems": MAX_ITEMS,
    "maxItems": None,
    "minProperties": MAX_OBJECT_PROPERTIES,
    "maxProperties": None,
    "minContains": MAX_ITEMS,
    "maxContains": None,
}
_KINDS = {  # what check() does with each keyword generate() reads
    **dict.fromkeys(_ONE, _ONE_SCHEMA),
    **dict.fromkeys(_LISTS, _LIST),
    **dict.fromkeys(_MAPS, _MAP),
    "items": _ITEMS,
    **dict.fromkeys(
        (*_COUNTS, "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "type"),
        _KEYWORD,
    ),
    **dict.fromkeys(("enum", "const", "required", "dependentRequired", "pattern", "format"), _KEYWORD),
    **dict.fromkeys(("uniqueItems", "nullable", "$ref"), _KEYWORD),
}
_INT64 = 2**63  # orjson writes integers in [-2**63, 2**64)
_UNSIZED = frozenset(("null", "boolean", "number", "integer"))
_SIZED = frozenset(("string", "array", "object"))
_CAP = 1 << 40  # sizes are computed saturating here: no big integers
_LEAST_HOPS = 3  # $refs followed when bounding the smallest value from below
_REPR = reprlib.Repr()  # a client's value quoted in an error: short, whatever its size
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 40, 40, 4, 4, 2
_brief = _REPR.repr


class SchemaError(ValueError):
    """A schema llmsim refuses: malformed, over a limit, or needing more output than it generates.

    ``path`` is a JSON pointer to the subschema at fault ("" for the root); ``str()`` reads as
    OpenAI's schema errors do: ``In context=('properties', 'a'), <message>``.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message, path)
        self.message = message
        self.path = path
        self.context: tuple[str | int, ...] = tuple(
            p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]
        )

    @classmethod
    def at(cls, message: str, parts: tuple[str | int, ...]) -> SchemaError:
        """An error at the subschema reached through `parts` (keys and list indexes)."""
        error = cls(message, "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts))
        error.context = parts
        return error

    def __str__(self) -> str:
        return f"In context={self.context!r}, {self.message}"


def _over_budget() -> SchemaError:
    return SchemaError(
        f"the schema needs more output than llmsim generates (more than {GENERATION_BUDGET} steps a "
        "request, shared by its choices and tool calls): make it smaller or less recursive"
    )


# ---------------------------------------------------------------------------------------------
# check(): one linear pass at request parsing.


def check(schema: Any) -> None:
    """Raise :class:`SchemaError` unless :func:`generate` can interpret `schema` within llmsim's
    bounds. Linear in the schema: each subschema is visited once, ``$ref`` targets included."""
    checker = _Checker(schema)
    try:
        checker.run()
    except RecursionError:
        raise SchemaError("the schema nests more deeply than llmsim follows") from None


class _Checker:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.subschemas = 0
        self.properties = 0  # property names
        self.listed = 0  # names in required and dependentRequired
        self.enums = 0
        self.chars = 0  # MAX_NAME_CHARS
        self.pattern_cost = 0
        self.patterns: dict[str, _Pattern] = {}
        self.walked: set[int] = set()
        self.targets: dict[str, Any] = {}  # resolved local $refs
        self.queue: list[tuple[str, Any]] = []  # ...to walk after the document itself
        self.memo: dict[int, int] = {}
        self.active: set[int] = set()

    def run(self) -> None:
        self.walk(self.root, ())
        done = 0
        while done < len(self.queue):  # targets outside the places walk() looks (grows as it goes)
            ref, target = self.queue[done]
            done += 1
            if not isinstance(target, bool) and id(target) not in self.walked:
                self.walk(target, tuple(_pointer_parts(ref)))
        least = self.least(self.root, 0)
        if least > MAX_OUTPUT_BYTES:
            raise SchemaError(
                f"the smallest value valid against this schema is over {MAX_OUTPUT_BYTES} bytes of JSON, "
                "more than llmsim generates"
            )

    def walk(self, start: Any, base: tuple[str | int, ...]) -> None:
        stack: list[tuple[Any, tuple[str | int, ...], int, int]] = [(start, base, 0, 0)]
        while stack:
            node, path, nesting, depth = stack.pop()
            if isinstance(node, bool):
                continue
            if not isinstance(node, dict):
                raise SchemaError.at(f"{_brief(node)} is not of type 'object', 'boolean'", path)
            if id(node) in self.walked:
                continue
            self.walked.add(id(node))
            self.subschemas += 1
            if self.subschemas > MAX_SUBSCHEMAS:
                raise SchemaError.at(f"more than {MAX_SUBSCHEMAS} subschemas, more than llmsim reads", path)
            if depth > MAX_SCHEMA_DEPTH:
                raise SchemaError.at(
                    f"subschemas nested {depth} deep exceed llmsim's limit of {MAX_SCHEMA_DEPTH}", path
                )
            if nesting > MAX_NESTING:
                raise SchemaError.at(f"{nesting} levels of nesting exceeds limit of {MAX_NESTING}", path)
            for key, value in node.items():
                kind = _KINDS.get(key)
                if kind is None:  # annotations, unknown keywords: not read, not walked
                    continue
                if kind is _KEYWORD:
                    if not (key == "type" and isinstance(value, str) and value in _TYPES):  # common: quick
                        self.keyword(key, value, path)
                    continue
                inner = nesting + (key in _NESTS)
                if kind is _ONE_SCHEMA or (kind is _ITEMS and not isinstance(value, list)):
                    stack.append((value, (*path, key), inner, depth + 1))
                elif kind is _MAP:
                    if not isinstance(value, dict):
                        raise SchemaError.at(f"'{key}' must be an object, not {_brief(value)}", path)
                    self.names(key, value, path)
                    stack += [(sub, (*path, key, name), inner, depth + 1) for name, sub in value.items()]
                else:
                    if kind is _LIST and (not isinstance(value, list) or not value):
                        raise SchemaError.at(f"'{key}' must be a non-empty array of schemas", path)
                    stack += [(sub, (*path, key, i), inner, depth + 1) for i, sub in enumerate(value)]

    def names(self, key: str, value: dict[str, Any], path: tuple[str | int, ...]) -> None:
        """Count a map's names against OpenAI's totals; compile patternProperties."""
        if key == "patternProperties":
            for name in value:
                self.pattern(name, path, key)
            return
        if key == "properties":
            self.properties += len(value)
            if self.properties > MAX_OBJECT_PROPERTIES:
                raise SchemaError.at(
                    f"Expected at most {MAX_OBJECT_PROPERTIES} object properties in total within a single "
                    f"schema, but received more than {MAX_OBJECT_PROPERTIES}.",
                    path,
                )
        if key in ("properties", "$defs", "definitions"):
            self.add_chars(sum(len(name) for name in value), path)

    def add_chars(self, count: int, path: tuple[str | int, ...]) -> None:
        self.chars += count
        if self.chars > MAX_NAME_CHARS:
            raise SchemaError.at(
                "Expected the total string length of property names, definition names, enum values and "
                f"const values to be at most {MAX_NAME_CHARS} characters, but received more.",
                path,
            )

    def keyword(self, key: str, value: Any, path: tuple[str | int, ...]) -> None:
        """The keywords generate() reads that hold no subschema: right type, within bounds."""
        if key in _COUNTS:
            if not _is_whole(value) or value < 0:
                raise SchemaError.at(f"'{key}' must be a non-negative integer, not {_brief(value)}", path)
            most = _COUNTS[key]
            if most is not None and value > most:
                raise SchemaError.at(f"'{key}' {value} is more than llmsim generates (at most {most})", path)
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if not (_is_number(value) and -sys.float_info.max <= value <= sys.float_info.max) and not (
                key.startswith("exclusive") and isinstance(value, bool)
            ):
                raise SchemaError.at(f"'{key}' must be a finite number, not {_brief(value)}", path)
        elif key == "multipleOf":
            low, high = MULTIPLE_OF_RANGE
            if not _is_number(value) or not value > 0:
                raise SchemaError.at(f"'multipleOf' must be a number above 0, not {_brief(value)}", path)
            if not low <= value <= high:
                raise SchemaError.at(
                    f"'multipleOf' {value} is outside what llmsim generates ({low} to {high})", path
                )
        elif key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or any(not isinstance(k, str) or k not in _TYPES for k in kinds):
                raise SchemaError.at(
                    f"'type' must be one of {', '.join(map(repr, _TYPES))} or a non-empty array of them, "
                    f"not {_brief(value)}",
                    path,
                )
        elif key == "enum":
            if not isinstance(value, list):
                raise SchemaError.at(f"'enum' must be an array, not {_brief(value)}", path)
            self.enums += len(value)
            if self.enums > MAX_ENUM_VALUES:
                raise SchemaError.at(
                    f"Expected at most {MAX_ENUM_VALUES} enum values in total within a single schema, but "
                    f"received more than {MAX_ENUM_VALUES}.",
                    path,
                )
            chars = sum(self.data_chars(v, path) for v in value)
            many, most = LARGE_ENUM
            if len(value) > many and all(isinstance(v, str) for v in value) and chars > most:
                raise SchemaError.at(
                    f"Expected the values of a string enum with more than {many} values to total at most "
                    f"{most} characters, but received {chars}.",
                    path,
                )
        elif key == "const":
            self.data_chars(value, path)
        elif key in ("required", "dependentRequired"):
            if key == "dependentRequired" and not isinstance(value, dict):
                raise SchemaError.at(f"'dependentRequired' must be an object, not {_brief(value)}", path)
            lists = value.values() if isinstance(value, dict) else [value]
            for names in lists:
                if not isinstance(names, list) or any(not isinstance(n, str) for n in names):
                    raise SchemaError.at(f"'{key}' must hold arrays of strings, not {_brief(value)}", path)
                self.listed += len(names)
            if self.listed > MAX_OBJECT_PROPERTIES:
                raise SchemaError.at(
                    f"more than {MAX_OBJECT_PROPERTIES} names in 'required' and 'dependentRequired' in total",
                    path,
                )
        elif key == "pattern":
            self.pattern(value, path, key)
        elif key in ("format", "$ref") and not isinstance(value, str):
            raise SchemaError.at(f"'{key}' must be a string, not {_brief(value)}", path)
        elif key in ("uniqueItems", "nullable") and not isinstance(value, bool):
            raise SchemaError.at(f"'{key}' must be a boolean, not {_brief(value)}", path)
        elif key == "$ref" and value not in self.targets:
            found, target = _resolve(self.root, value)
            if not found:
                raise SchemaError.at(f"reference {_brief(value)} can't be resolved", path)
            self.targets[value] = target
            self.queue.append((value, target))

    def pattern(self, pattern: Any, path: tuple[str | int, ...], key: str) -> None:
        if not isinstance(pattern, str):
            raise SchemaError.at(f"'{key}' must be a string, not {_brief(pattern)}", path)
        if pattern in self.patterns:
            return
        self.pattern_cost += len(pattern)  # before parsing: no huge pattern gets compiled
        if self.pattern_cost <= MAX_PATTERN_COST:
            info = _pattern(pattern)[0]
            if isinstance(info, str):
                raise SchemaError.at(f"'{key}' {_brief(pattern)} {info}", path)
            self.patterns[pattern] = info
            self.pattern_cost += info.cost - len(pattern)
        if self.pattern_cost > MAX_PATTERN_COST:
            raise SchemaError.at(
                f"patterns and their required repeats total more than {MAX_PATTERN_COST} characters, "
                "more than llmsim compiles",
                path,
            )

    def data_chars(self, value: Any, path: tuple[str | int, ...]) -> int:
        """An enum or const value's characters (strings; 1 for any other node), counted against
        MAX_NAME_CHARS as they go, so a huge value stops the count early."""
        total = 0
        stack = [(value, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_SCHEMA_DEPTH:
                raise SchemaError.at(f"an enum or const value nests more than {MAX_SCHEMA_DEPTH} deep", path)
            count = len(node) if isinstance(node, str) else 1
            if isinstance(node, dict):
                count += sum(len(k) for k in node)
                stack += [(v, depth + 1) for v in node.values()]
            elif isinstance(node, list):
                stack += [(v, depth + 1) for v in node]
            total += count
            self.add_chars(count, path)
        return total

    # -- the smallest value, bounded from below --------------------------------------------------

    def least(self, schema: Any, hops: int) -> int:
        """A lower bound on the compact-JSON size of every value valid against `schema`: it
        rejects at parse time what could never fit the output (five nested minItems: 20)."""
        if not isinstance(schema, dict):
            return 1
        key = id(schema)
        known = self.memo.get(key)
        if known is not None:
            return known
        if key in self.active or hops > _LEAST_HOPS:
            return 1  # cycles and long chains: 1 is still a lower bound
        kind = schema.get("type")
        if (
            isinstance(kind, str)
            and kind in _UNSIZED
            and "$ref" not in schema
            and "allOf" not in schema
            and "anyOf" not in schema
            and "oneOf" not in schema
        ):
            return 1  # the common leaf, quickly
        self.active.add(key)
        bound = 1 if "const" in schema or "enum" in schema else self.least_typed(schema, hops)
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref in self.targets:
            bound = max(bound, self.least(self.targets[ref], hops + 1))
        for sub in schema.get("allOf", ()):
            bound = max(bound, self.least(sub, hops))
        for key_ in ("anyOf", "oneOf"):
            if key_ in schema:
                bound = max(bound, min(self.least(sub, hops) for sub in schema[key_]))
        self.active.discard(key)
        self.memo[key] = bound = min(bound, _CAP)
        return bound

    def least_typed(self, s: dict[str, Any], hops: int) -> int:
        kind = s.get("type")
        types = [kind] if isinstance(kind, str) else kind or _inferred(s)
        if not types or s.get("nullable") is True or not _SIZED.issuperset(types):
            return 1
        sizes = []
        if "string" in types:
            pattern = self.patterns.get(s.get("pattern"))  # type: ignore[arg-type]
            sizes.append(2 + max(_int(s.get("minLength"), 0), pattern.shortest if pattern else 0))
        if "array" in types:
            count = _int(s.get("minItems"), 0)
            items = s.get("items", True)
            prefix, rest = (
                (items, s.get("additionalItems", True))
                if isinstance(items, list)
                else (s.get("prefixItems") or [], items)
            )
            head = min(count, len(prefix))
            size = 2 + max(count - 1, 0) + sum(self.least(prefix[i], hops) for i in range(head))
            sizes.append(size + (count - head) * self.least(rest, hops) if count > head else size)
        if "object" in types:
            props = s.get("properties") or {}
            extra = s.get("additionalProperties", True)
            required = dict.fromkeys(s.get("required") or ())
            size = 2 + max(_int(s.get("minProperties"), 0) - len(required), 0) * 5
            for name in required:
                size += len(name) + 4 + self.least(props.get(name, extra), hops)
            sizes.append(size)
        return min(sizes)


def _inferred(s: Mapping[str, Any]) -> list[str]:
    """The type generate() gives a schema without one, from its keywords ([] for any)."""
    return [kind for kind, keys in _INFER if any(k in s for k in keys)][:1]


def _is_whole(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, default: Any) -> Any:
    """A count keyword as an int (check() admits 2.0 as JSON Schema does), else `default`."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _pointer_parts(ref: str) -> list[str]:
    return [unquote(p).replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]]


def _resolve(root: Any, ref: str) -> tuple[bool, Any]:
    """(found, target) for a $ref: local JSON pointers are followed; any other ref is ``{}``."""
    if not ref.startswith("#"):
        return True, {}
    if ref != "#" and not ref.startswith("#/"):
        return False, {}  # "#anchor": not supported
    node = root
    for part in _pointer_parts(ref):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, {}
    return True, node


# ---------------------------------------------------------------------------------------------
# Equality and types as JSON Schema sees them: True is not 1, 1 is 1.0.


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or value.is_integer())
    return {
        "string": isinstance(value, str),
        "number": _is_number(value),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(name, False)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _key(value: Any) -> Any:
    """A hashable key under which JSON-Schema-equal values collide (for uniqueItems)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, list):
        return ("l", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("d", frozenset((k, _key(v)) for k, v in value.items()))
    return ("s" if isinstance(value, str) else "n", value)


def _multiple_ok(value: Any, step: Any) -> bool:
    """jsonschema's own test, floats included: a value it rejects is no use to a client."""
    if isinstance(step, float):
        try:
            quotient = value / step
            return int(quotient) == quotient
        except OverflowError:
            return (Fraction(value) / Fraction(step)).denominator == 1
    return not value % step


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


def _as_dict(schema: Any) -> dict[str, Any]:
    if isinstance(schema, Mapping):
        return dict(schema)
    return {"not": {}} if schema is False else {}


# ---------------------------------------------------------------------------------------------
# Patterns: Python's parse tree to build strings from, the `regex` module to match them.

_PRINTABLE = string.ascii_letters + string.digits + " _-.,"
_CATEGORIES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters,
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": " -.,",
}
_FORMATS = frozenset(
    (
        *("date-time", "date", "time", "email", "idn-email", "uri", "url", "iri", "uri-reference"),
        *("iri-reference", "hostname", "idn-hostname", "ipv4", "ipv6", "uuid", "duration"),
    )
)
_REPEATS = frozenset(("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"))
_QUANTIFIER = re.compile(r"\{(\d+)")


@dataclass(frozen=True)
class _Pattern:
    compiled: Any  # regex.Pattern: what matches candidates
    tree: Any  # Python's parse tree to build candidates from; None if only `regex` parses it
    shortest: int  # characters every match needs (a lower bound)
    cost: int  # the pattern's length plus its required repeats unrolled (regex compiles those)


_PATTERNS: OrderedDict[str, _Pattern | str] = OrderedDict()  # most recently used last
_PATTERN_CACHE = (512, 500)  # patterns kept; the largest kept (characters + unrolled repeats)


def _pattern(pattern: str) -> tuple[_Pattern | str, bool]:
    """_analyse(pattern), and whether it ran just now (callers pay for that). Only small patterns
    are kept: a compiled regex takes ~120 bytes per unrolled repeat, so ``a{9000}`` takes 1 MB."""
    known = _PATTERNS.get(pattern)
    if known is not None:
        _PATTERNS.move_to_end(pattern)
        return known, False
    info = _analyse(pattern)
    if len(pattern) + (info.cost if isinstance(info, _Pattern) else 0) <= _PATTERN_CACHE[1]:
        _PATTERNS[pattern] = info
        if len(_PATTERNS) > _PATTERN_CACHE[0]:
            _PATTERNS.popitem(last=False)
    return info, True


def _analyse(pattern: str) -> _Pattern | str:
    """The pattern, compiled and measured, or why not (a phrase). Measured before compiling:
    `regex` unrolls required repeats, so ``a{1000000000}`` would take gigabytes."""
    try:
        tree: Any = _sre.parse(pattern)
        shortest, unrolled = _measure(tree, {})
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        # Syntax only `regex` reads (\p{L}, variable lookbehind): bound its repeats from the text.
        tree, shortest, unrolled = None, 0, len(pattern)
        for digits in _QUANTIFIER.findall(pattern):
            unrolled = min(unrolled * max(int(digits[:13]), 1), _CAP)
    if shortest > MAX_STRING_LENGTH:
        return f"matches only strings over {MAX_STRING_LENGTH} characters, more than llmsim generates"
    if unrolled > MAX_PATTERN_COST:
        return f"repeats more than {MAX_PATTERN_COST} times in all, more than llmsim compiles"
    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError, TypeError) as exc:
        return f"is not a valid regular expression: {exc}"
    return _Pattern(compiled, tree, shortest, len(pattern) + unrolled)


def _measure(tree: Any, groups: dict[int, int]) -> tuple[int, int]:
    """(shortest match, nodes when required repeats are unrolled), saturating at _CAP."""
    shortest = nodes = 0
    for op, arg in tree:
        kind = _name(op)
        length, size = 1, 1
        if kind in _REPEATS:
            low, _, sub = arg
            inner, inner_size = _measure(sub, groups)
            length, size = low * inner, max(low, 1) * max(inner_size, 1)
        elif kind in ("SUBPATTERN", "ATOMIC_GROUP"):
            length, size = _measure(arg[-1] if kind == "SUBPATTERN" else arg, groups)
            if kind == "SUBPATTERN" and arg[0] is not None:
                groups[arg[0]] = length
        elif kind == "BRANCH":
            measured = [_measure(branch, groups) for branch in arg[1]]
            length, size = min(m[0] for m in measured), sum(m[1] for m in measured)
        elif kind == "GROUPREF":
            length = groups.get(arg, 0)
        elif kind == "GROUPREF_EXISTS":
            measured = [_measure(branch, groups) for branch in arg[1:] if branch is not None]
            length, size = 0, 1 + sum(m[1] for m in measured)
        elif kind in ("ASSERT", "ASSERT_NOT"):
            length, size = 0, _measure(arg[1], groups)[1]
        elif kind == "AT":
            length = 0
        shortest, nodes = min(shortest + length, _CAP), min(nodes + size, _CAP)
    return shortest, nodes


def _name(op: Any) -> str:
    return getattr(op, "name", str(op))


def _in_set(items: list[tuple[Any, Any]], char: str) -> bool:
    for op, arg in items:
        kind = _name(op)
        if (
            (kind == "LITERAL" and ord(char) == arg)
            or (kind == "RANGE" and arg[0] <= ord(char) <= arg[1])
            or (kind == "CATEGORY" and char in _CATEGORIES.get(_name(arg), ""))
        ):
            return True
    return False


def _pick_in(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    if items and _name(items[0][0]) == "NEGATE":
        allowed = [c for c in _PRINTABLE if not _in_set(items[1:], c)]
        return rng.choice(allowed or ["~"])
    op, arg = rng.choice(items)
    kind = _name(op)
    if kind == "RANGE":
        return chr(rng.randint(arg[0], arg[1]))
    if kind == "CATEGORY":
        return rng.choice(_CATEGORIES.get(_name(arg), "a"))
    return chr(arg) if kind == "LITERAL" else "a"


class _TooLong(Exception):
    """A candidate string outgrew the length it may have."""


# ---------------------------------------------------------------------------------------------


def generate(schema: Mapping[str, Any] | bool, rng: random.Random, budget: int = GENERATION_BUDGET) -> Any:
    """A value valid against `schema` (one that passed :func:`check`), deterministic for a given
    rng state; :class:`SchemaError` once `budget` steps are spent."""
    try:
        return _Generator(schema, rng, budget).value(schema, 0)
    except RecursionError:
        raise SchemaError("the schema nests more deeply than llmsim generates") from None


class _Generator:
    def __init__(self, root: Any, rng: random.Random, budget: int) -> None:
        self.root = root
        self.rng = rng
        self.retries = _RETRIES
        self.budget = budget
        self.room = 0  # characters a pattern candidate may still take
        self.filled = 0  # room left once a candidate is long enough: repeats go on until then
        self._refs: dict[str, Any] = {}
        self._cyclic: dict[str, bool] = {}
        self._patterns: dict[str, _Pattern | None] = {}
        self._sizes: dict[int, int] = {}

    def charge(self, steps: int) -> None:
        """Spend `steps` (~1 us each) of the budget: every loop here pays before it goes on."""
        self.budget -= steps
        if self.budget < 0:
            raise _over_budget()

    # -- references ----------------------------------------------------------------------------

    def deref(self, ref: Any) -> Any:
        if not isinstance(ref, str):
            return {}
        if ref not in self._refs:
            self.charge(1 + len(ref) // 16)
            self._refs[ref] = _resolve(self.root, ref)[1]
        return self._refs[ref]

    def recursive(self, schema: Any, visiting: tuple[str, ...] = ()) -> bool:
        """Whether following `schema`'s $refs can come back to one of them."""
        for ref in self.refs_in(schema):
            if ref in visiting:
                return True
            if ref not in self._cyclic:
                self._cyclic[ref] = False  # provisional: a cycle through here is caught by visiting
                self._cyclic[ref] = self.recursive(self.deref(ref), (*visiting, ref))
            if self._cyclic[ref]:
                return True
        return False

    def refs_in(self, schema: Any) -> list[str]:
        """Every $ref in the subschemas that apply to `schema`'s value, without following them."""
        found: list[str] = []
        stack = [schema]
        while stack:
            node = stack.pop()
            self.charge(1)
            if not isinstance(node, Mapping):
                continue
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            for key, sub in node.items():
                if key in _ONE:
                    stack.append(sub)
                elif key in _LISTS and isinstance(sub, list):
                    stack += sub
                elif key in ("properties", "patternProperties", "dependentSchemas") and isinstance(
                    sub, Mapping
                ):
                    stack += sub.values()
                elif key == "items":
                    stack += sub if isinstance(sub, list) else [sub]
        return found

    def flatten(self, schema: Any, depth: int) -> tuple[dict[str, Any], int]:
        """`schema` with its $ref and allOf merged in, and the $ref depth reached."""
        flat = _as_dict(schema)
        while ("$ref" in flat or "allOf" in flat) and depth <= _HARD_DEPTH:
            if "$ref" in flat:
                target = _as_dict(self.deref(flat.pop("$ref")))
                flat = self.merge(target, flat)
                depth += 1
            if "allOf" in flat:
                for sub in flat.pop("allOf"):
                    flat = self.merge(flat, _as_dict(sub))
        return flat, depth

    # -- merging (allOf, $ref siblings, a chosen anyOf/oneOf branch): one schema meaning "both" --

    def merge(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        self.charge(1 + len(a) + len(b))
        out = dict(a)
        for key, theirs in b.items():
            if key not in out:
                out[key] = theirs
                continue
            ours = out[key]
            if key in _ANNOTATIONS or ours is theirs:
                continue
            if not isinstance(ours, (list, dict)) and _equal(ours, theirs):
                continue
            if key in _MIN_KEYS and _is_number(ours) and _is_number(theirs):
                out[key] = max(ours, theirs)
            elif key in _MAX_KEYS and _is_number(ours) and _is_number(theirs):
                out[key] = min(ours, theirs)
            elif key == "type":
                mine, other = _types(a), _types(b)
                both = [t for t in mine if t in other or (t == "integer" and "number" in other)]
                both += [t for t in other if t == "integer" and "number" in mine and t not in both]
                out[key] = both or mine
            elif key == "enum" and isinstance(ours, list) and isinstance(theirs, list):
                self.charge(sum(self.size(v) for v in itertools.chain(ours, theirs)))
                allowed = {_key(y) for y in theirs}
                out[key] = [x for x in ours if _key(x) in allowed] or ours
            elif key in ("required", "allOf") and isinstance(ours, list) and isinstance(theirs, list):
                self.charge(len(ours) + len(theirs))
                seen = set(ours) if key == "required" else {id(x) for x in ours}
                out[key] = [*ours, *(x for x in theirs if (x if key == "required" else id(x)) not in seen)]
            elif key in ("properties", "patternProperties", "dependentRequired"):
                self.charge(len(ours) + len(theirs))
                joined = dict(ours)
                for name, sub in theirs.items():
                    if name not in joined:
                        joined[name] = sub
                    elif key == "dependentRequired":
                        joined[name] = [*joined[name], *sub]
                    else:
                        joined[name] = {"allOf": [joined[name], sub]}
                out[key] = joined
            elif key == "prefixItems":
                self.charge(len(ours) + len(theirs))
                joined = [{"allOf": [x, y]} for x, y in zip(ours, theirs, strict=False)]
                out[key] = joined + list(ours[len(theirs) :]) + list(theirs[len(ours) :])
            elif key in ("items", "additionalProperties") and not isinstance(ours, list):
                out[key] = False if ours is False or theirs is False else {"allOf": [ours, theirs]}
            elif key == "not":
                out[key] = {"anyOf": [ours, theirs]}
            elif key == "multipleOf" and _is_number(ours) and _is_number(theirs):
                a_, b_ = Fraction(str(ours)), Fraction(str(theirs))
                lcm = Fraction(math.lcm(a_.numerator, b_.numerator), math.gcd(a_.denominator, b_.denominator))
                if lcm > MULTIPLE_OF_RANGE[1]:
                    raise SchemaError("the merged 'multipleOf' is larger than llmsim generates")
                out[key] = int(lcm) if lcm.denominator == 1 else float(lcm)
            elif key == "uniqueItems":
                out[key] = ours or theirs
            elif key == "nullable":
                out[key] = ours and theirs
            elif key in ("anyOf", "oneOf", "$ref"):
                out["allOf"] = [*out.get("allOf", ()), {key: theirs}]
            # const, pattern, format, ...: ours wins (documented limit).
        # additionalProperties: false in one side forbids the other side's extra optional properties.
        for mine in (a, b):
            if mine.get("additionalProperties") is False and isinstance(out.get("properties"), Mapping):
                allowed = set(mine.get("properties") or ()) | set(out.get("required") or ())
                patterns = list(mine.get("patternProperties") or ())
                out["properties"] = {
                    n: s
                    for n, s in out["properties"].items()
                    if n in allowed or any(self.search(p, n) for p in patterns)
                }
        return out

    # -- values --------------------------------------------------------------------------------

    def value(self, schema: Any, depth: int) -> Any:
        self.charge(6)
        flat, depth = self.flatten(schema, depth)
        if depth > _HARD_DEPTH:
            raise SchemaError(
                "the schema needs more output than llmsim generates: its $refs recurse more than "
                f"{_HARD_DEPTH} deep with nothing optional to stop them"
            )
        minimal = depth > MAX_REF_DEPTH
        if "oneOf" in flat:
            return self.one_of(flat, depth)
        if "anyOf" in flat:
            rest = {k: v for k, v in flat.items() if k != "anyOf"}
            branch = flat["anyOf"][self.branch_order(flat["anyOf"], minimal)[0]]
            return self.value(self.merge(rest, _as_dict(branch)), depth)
        if "not" in flat:
            rest = {k: v for k, v in flat.items() if k != "not"}
            candidate = self.value(rest, depth)
            while self.valid(flat["not"], candidate) and self.spend():
                candidate = self.value(rest, depth)
            return candidate
        if "const" in flat:
            return self.copy(flat["const"])
        if "enum" in flat:
            rest = {k: v for k, v in flat.items() if k != "enum"}
            options = [e for e in flat["enum"] if self.valid(rest, e)] or flat["enum"]
            return self.copy(self.rng.choice(options)) if options else None
        kind = self.pick_type(flat, minimal)
        if kind == "object":
            return self.object(flat, depth, minimal)
        if kind == "array":
            return self.array(flat, depth, minimal)
        if kind == "string":
            return self.string(flat)
        if kind in ("integer", "number"):
            return self.number(flat, kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "any":
            return self.value({"type": self.rng.choice(_SCALARS)}, depth)
        return None

    def size(self, value: Any) -> int:
        """Steps to copy or compare `value` (nodes, plus characters / 16), paid once to count."""
        known = self._sizes.get(id(value))
        if known is not None:
            return known
        total = 0
        stack = [value]
        while stack:
            node = stack.pop()
            total += 1 + (len(node) >> 4 if isinstance(node, str) else 0)
            if isinstance(node, dict):
                stack += node.values()
            elif isinstance(node, list):
                stack += node
        self.charge(total)
        self._sizes[id(value)] = total
        return total

    def copy(self, value: Any) -> Any:
        if isinstance(value, (dict, list)):
            self.charge(self.size(value))
            return copy.deepcopy(value)
        return value

    def spend(self) -> bool:
        self.retries -= 1
        return self.retries >= 0

    def branch_order(self, branches: list[Any], minimal: bool) -> list[int]:
        order = list(range(len(branches)))
        self.rng.shuffle(order)
        if minimal:
            order.sort(key=lambda i: self.recursive(branches[i]))
        return order

    def one_of(self, flat: dict[str, Any], depth: int) -> Any:
        branches = flat["oneOf"]
        rest = {k: v for k, v in flat.items() if k != "oneOf"}
        first: list[Any] = []
        for i in self.branch_order(branches, depth > MAX_REF_DEPTH):
            for _ in range(3):
                candidate = self.value(self.merge(rest, _as_dict(branches[i])), depth)
                first = first or [candidate]
                others = (b for j, b in enumerate(branches) if j != i)
                if not any(self.valid(b, candidate) for b in others):
                    return candidate
                if not self.spend():
                    return first[0]
        return first[0] if first else None

    def pick_type(self, flat: dict[str, Any], minimal: bool) -> str:
        types = [t for t in _types(flat) if t in _TYPES]
        if not types and "type" not in flat:
            types = [kind for kind, keys in _INFER if any(k in flat for k in keys)][:1] or ["any"]
        if flat.get("nullable") and minimal:
            types.append("null")
        if not types:
            return "null"
        if minimal:
            scalars = [t for t in types if t not in ("object", "array")]
            if "null" in types:
                return "null"
            types = scalars or types
        solid = [t for t in types if t != "null"]
        if not solid or (len(solid) < len(types) and self.rng.random() < 0.2):
            return "null"
        return self.rng.choice(solid)

    def object(self, flat: dict[str, Any], depth: int, minimal: bool) -> dict[str, Any]:
        props: Mapping[str, Any] = flat.get("properties") or {}
        required = list(flat.get("required") or ())
        must = set(required)
        self.charge(len(props) + len(required))
        names = [n for n in props if n in must or (not minimal and self.rng.random() < 0.5)]
        chosen = set(names)
        names += [n for n in dict.fromkeys(required) if n not in chosen]
        chosen.update(names)
        dependent: Mapping[str, list[str]] = flat.get("dependentRequired") or {}
        for name in names:  # grows while iterating: dependents of dependents
            self.charge(1)
            more = [d for d in dependent.get(name, ()) if d not in chosen]
            names += more
            chosen.update(more)
        most, least = _int(flat.get("maxProperties"), None), _int(flat.get("minProperties"), 0)
        if most is not None and len(names) > most:
            optional = [n for n in names if n not in must]
            drop = set(optional[: len(names) - most])
            names = [n for n in names if n not in drop]
            chosen = set(names)
        for name in props:
            if len(names) >= least:
                break
            if name not in chosen:
                names.append(name)
                chosen.add(name)
        extra = 0
        patterns = list(flat.get("patternProperties") or ())
        while len(names) < least and flat.get("additionalProperties", True) is not False and extra < least:
            extra += 1
            self.charge(1)
            name = f"{self.rng.choice(_WORDS)}_{extra}"
            if name not in chosen and not any(self.search(p, name) for p in patterns):
                names.append(name)
                chosen.add(name)
        out = {}
        for name in names:
            self.charge(1 + len(name) // 16)
            out[name] = self.value(self.property_schema(flat, name), depth)
        return out

    def property_schema(self, flat: dict[str, Any], name: str) -> Any:
        props = flat.get("properties") or {}
        subs = [props[name]] if name in props else []
        subs += [s for p, s in (flat.get("patternProperties") or {}).items() if self.search(p, name)]
        extra = flat.get("additionalProperties", True)
        if not subs and isinstance(extra, Mapping):
            subs.append(extra)
        return subs[0] if len(subs) == 1 else {"allOf": subs}

    def array(self, flat: dict[str, Any], depth: int, minimal: bool) -> list[Any]:
        items = flat.get("items", True)
        if isinstance(items, list):  # draft 7 tuples
            prefix, rest = items, flat.get("additionalItems", True)
        else:
            prefix, rest = flat.get("prefixItems") or [], items
        low, high = _int(flat.get("minItems"), 0), _int(flat.get("maxItems"), None)
        if rest is False:
            high = len(prefix) if high is None else min(high, len(prefix))
        top = low + 3 if high is None else min(high, low + 3)
        count = low if minimal else self.rng.randint(min(max(low, 1), top), top) if top >= low else low
        unique = flat.get("uniqueItems", False)
        out: list[Any] = []
        seen: set[Any] = set()
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else rest
            item = self.value(sub, depth)
            while unique and _key(item) in seen and self.spend():
                item = self.value(sub, depth)
            if unique and _key(item) in seen and len(out) >= low:
                break
            seen.add(_key(item))
            out.append(item)
        return out

    # -- strings -------------------------------------------------------------------------------

    def string(self, flat: dict[str, Any]) -> str:
        low, high = _int(flat.get("minLength"), 0), _int(flat.get("maxLength"), None)
        pattern = flat.get("pattern")
        if isinstance(pattern, str):
            return self.patterned(pattern, low, high)
        formatted = self.formatted(flat.get("format"))
        if formatted is not None and low <= len(formatted) and (high is None or len(formatted) <= high):
            return formatted
        return self.text(low, high)

    def patterned(self, pattern: str, low: int, high: int | None) -> str:
        """A string built from the pattern's parse tree, with longer repeats while it is shorter
        than `low`; plain text if none matches (best effort, as documented)."""
        info = self.pattern(pattern)
        first = None
        if info is not None and info.tree is not None:
            fits_in = high if high is not None else max(2 * max(low, info.shortest), 256)
            limit = min(fits_in, MAX_STRING_LENGTH)
            extra, fill = 3, 0
            for _ in range(10):
                candidate = self.from_pattern(info.tree, extra, limit, fill)
                if candidate is None:  # longer than it may be: shorter repeats next time
                    extra = max(extra // 2, 0)
                    continue
                first = candidate if first is None else first
                if low <= len(candidate) and self.search(pattern, candidate):
                    return candidate
                if len(candidate) < low:
                    fill = low
        text = self.text(low, high)
        return text if first is None or self.search(pattern, text) else first

    def pattern(self, pattern: str) -> _Pattern | None:
        """The compiled pattern, None if unusable; compiling is paid for, about its cost in us."""
        if pattern not in self._patterns:
            self.charge(1 + len(pattern) // 16)
            info, fresh = _pattern(pattern)
            if fresh and isinstance(info, _Pattern):
                self.charge(info.cost)
            self._patterns[pattern] = info if isinstance(info, _Pattern) else None
        return self._patterns[pattern]

    def search(self, pattern: str, text: str) -> bool:
        """re.search without catastrophic backtracking: a match that times out is no match."""
        info = self.pattern(pattern)
        if info is None:
            return False
        start = time.perf_counter()
        try:
            found = info.compiled.search(text, timeout=_REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            found = False
        # Backtracking is the one cost steps cannot predict: a slow match is charged its time.
        self.charge(max(2 + len(text) // 32, int((time.perf_counter() - start) * 1e6)))
        return found

    def from_pattern(self, tree: Any, extra: int, limit: int, fill: int = 0) -> str | None:
        """A string the tree matches, None if longer than `limit`. Repeats take up to `extra`
        more than their minimum; while fewer than `fill` characters are written, they go on."""
        out: list[str] = []
        self.room, self.filled = limit, limit - fill
        try:
            self.emit(tree, out, {}, extra)
        except _TooLong:
            return None
        return "".join(out)

    def put(self, out: list[str], text: str) -> None:
        self.room -= len(text)
        if self.room < 0:
            raise _TooLong
        out.append(text)

    def emit(self, tree: Any, out: list[str], groups: dict[int, str], extra: int) -> None:
        rng = self.rng
        for op, arg in tree:
            self.charge(3)  # a node written costs ~3 us (a choice, a parse-tree lookup)
            kind = _name(op)
            if kind == "LITERAL":
                self.put(out, chr(arg))
            elif kind == "NOT_LITERAL":
                self.put(out, rng.choice([c for c in _PRINTABLE if ord(c) != arg]))
            elif kind == "ANY":
                self.put(out, rng.choice(string.ascii_letters))
            elif kind == "IN":
                self.put(out, _pick_in(arg, rng))
            elif kind in _REPEATS:
                low, high, sub = arg
                count, done = rng.randint(low, min(high, low + extra)), 0
                while done < count or (done < high and self.room > self.filled):
                    self.charge(1)
                    room = self.room
                    self.emit(sub, out, groups, extra)
                    done += 1
                    if done > count and self.room == room:  # writes nothing: cannot fill
                        break
            elif kind == "SUBPATTERN":
                inner: list[str] = []
                self.emit(arg[-1], inner, groups, extra)
                if arg[0] is not None:
                    groups[arg[0]] = "".join(inner)
                out += inner
            elif kind == "BRANCH":
                self.emit(rng.choice(arg[1]), out, groups, extra)
            elif kind == "GROUPREF":
                self.put(out, groups.get(arg, ""))
                self.charge(len(out[-1]) // 8)
            elif kind == "GROUPREF_EXISTS":
                branch = arg[1] if arg[0] in groups else arg[2]
                if branch is not None:
                    self.emit(branch, out, groups, extra)
            elif kind == "ATOMIC_GROUP":
                self.emit(arg, out, groups, extra)
            # AT (anchors), ASSERT, ASSERT_NOT: nothing to write.

    def text(self, low: int, high: int | None) -> str:
        words = [self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 3))]
        length = sum(map(len, words)) + len(words) - 1
        while length < low:
            self.charge(1)
            words.append(self.rng.choice(_WORDS))
            length += len(words[-1]) + 1
        text = " ".join(words)
        if high is not None and len(text) > high:
            text = text[:high]
            if text.endswith(" ") and len(text) > low:
                text = text[:-1]
        return text

    def formatted(self, fmt: Any) -> str | None:
        if fmt not in _FORMATS:
            return None
        rng = self.rng
        date = f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        word = rng.choice(_WORDS)
        if fmt == "date-time":
            return f"{date}T{clock}"
        if fmt in ("email", "idn-email"):
            return f"{word}.{rng.choice(_WORDS)}@example.com"
        if fmt in ("uri", "url", "iri", "uri-reference", "iri-reference"):
            return f"https://example.com/{word}"
        if fmt in ("hostname", "idn-hostname"):
            return f"{word}.example.com"
        if fmt == "ipv4":
            return ".".join(str(rng.randint(1, 254)) for _ in range(4))
        if fmt == "ipv6":
            return f"2001:db8::{rng.randint(1, 0xFFFF):x}"
        if fmt == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if fmt == "duration":
            return f"PT{rng.randint(1, 59)}M"
        return {"date": date, "time": clock}.get(fmt)

    # -- numbers -------------------------------------------------------------------------------

    def number(self, flat: dict[str, Any], integer: bool) -> int | float:
        low, low_open = _bound(flat, "minimum", "exclusiveMinimum")
        high, high_open = _bound(flat, "maximum", "exclusiveMaximum")

        def inside(v: float) -> bool:
            above = low is None or (v > low if low_open else v >= low)
            return above and (high is None or (v < high if high_open else v <= high))

        self.charge(4)
        step = flat.get("multipleOf")
        step = step if _is_number(step) and step > 0 else None
        try:
            value = self.pick_number(low, low_open, high, high_open, integer, inside, step)
        except OverflowError:
            raise SchemaError(
                "'multipleOf' and the bounds ask for numbers beyond what llmsim writes"
            ) from None
        if isinstance(value, int) and not -_INT64 <= value < _INT64:  # past what orjson writes
            near = float(value)  # or a neighbour: rounding may have crossed an open bound
            for candidate in (near, math.nextafter(near, math.inf), math.nextafter(near, -math.inf)):
                if inside(candidate) and (step is None or _multiple_ok(candidate, step)):
                    return candidate
            raise SchemaError("the bounds ask for integers beyond what llmsim writes")
        return value

    def pick_number(
        self,
        low: float | None,
        low_open: bool,
        high: float | None,
        high_open: bool,
        integer: bool,
        inside: Callable[[float], bool],
        step: float | None,
    ) -> int | float:
        if step is not None:
            return self.multiple(step, low, high, integer, inside)
        if integer:
            lo = None if low is None else math.floor(low) + 1 if low_open else math.ceil(low)
            hi = None if high is None else math.ceil(high) - 1 if high_open else math.floor(high)
            lo, hi = _window(lo, hi, 100)
            return self.rng.randint(lo, hi) if lo <= hi else lo
        lo, hi = _window(low, high, 100)
        for _ in range(5):
            candidate = round(self.rng.uniform(lo, hi), 2)
            if inside(candidate):
                return candidate
        # Narrow or far-out ranges, where rounding (or the float grid itself) lands on a bound.
        edges = (math.nextafter(lo, math.inf), math.nextafter(hi, -math.inf))
        return next((v for v in ((lo + hi) / 2, lo, hi, *edges) if inside(v)), lo)

    def multiple(
        self,
        step: float,
        low: float | None,
        high: float | None,
        integer: bool,
        inside: Callable[[float], bool],
    ) -> int | float:
        """A multiple of `step` within the bounds, as jsonschema's float arithmetic sees it."""
        exact = Fraction(step) if isinstance(step, int) else Fraction(Decimal(repr(step)))
        unit = Fraction(exact.numerator) if integer else exact  # integer multiples of p/q: of p
        k_lo = None if low is None else math.ceil(Fraction(low) / unit)
        k_hi = None if high is None else math.floor(Fraction(high) / unit)
        k_lo, k_hi = _window(k_lo, k_hi, max(20, math.ceil(100 / unit)))  # values up to ~100

        def make(k: int) -> int | float:
            v = unit * k
            return int(v) if integer or isinstance(step, int) else float(v)

        self.charge(60)
        candidates = [self.rng.randint(k_lo, k_hi) for _ in range(5)] if k_lo <= k_hi else []
        candidates += [0, *range(k_lo, k_lo + 50)]
        # Far out on the float grid, neighbouring floats are all multiples: step off an open bound.
        edges = [
            math.nextafter(b, towards) for b, towards in ((low, math.inf), (high, -math.inf)) if b is not None
        ]
        for v in itertools.chain((make(k) for k in candidates), edges):
            if inside(v) and _multiple_ok(v, step):
                return int(v) if integer else v
        return make(k_lo)

    # -- validation (oneOf, not, enum filtering, pattern candidates) ----------------------------

    def valid(self, schema: Any, value: Any, depth: int = 0) -> bool:
        self.charge(3)
        if schema is True or schema is None:
            return True
        if schema is False:
            return False
        if depth > _HARD_DEPTH or not isinstance(schema, Mapping):
            return True
        s: Mapping[str, Any] = schema
        if "$ref" in s and not self.valid(self.deref(s["$ref"]), value, depth + 1):
            return False
        types = _types(s)
        if types and not any(_is_type(value, t) for t in types) and not (value is None and s.get("nullable")):
            return False
        if "const" in s and not _equal(value, s["const"]):
            return False
        if "enum" in s:
            self.charge(len(s["enum"]))
            if not any(_equal(value, e) for e in s["enum"]):
                return False
        if _is_number(value) and not self.valid_number(s, value):
            return False
        if isinstance(value, str) and not self.valid_string(s, value):
            return False
        if isinstance(value, list) and not self.valid_array(s, value, depth):
            return False
        if isinstance(value, dict) and not self.valid_object(s, value, depth):
            return False
        if not all(self.valid(sub, value, depth + 1) for sub in s.get("allOf", ())):
            return False
        if "anyOf" in s and not any(self.valid(sub, value, depth + 1) for sub in s["anyOf"]):
            return False
        if "oneOf" in s and sum(self.valid(sub, value, depth + 1) for sub in s["oneOf"]) != 1:
            return False
        return not ("not" in s and self.valid(s["not"], value, depth + 1))

    @staticmethod
    def valid_number(s: Mapping[str, Any], value: float) -> bool:
        checks = (
            ("minimum", lambda b: value >= b),
            ("maximum", lambda b: value <= b),
            ("exclusiveMinimum", lambda b: value > b),
            ("exclusiveMaximum", lambda b: value < b),
            ("multipleOf", lambda b: _multiple_ok(value, b)),
        )
        return all(check(s[key]) for key, check in checks if _is_number(s.get(key)))

    def valid_string(self, s: Mapping[str, Any], value: str) -> bool:
        if len(value) < _int(s.get("minLength"), 0) or len(value) > _int(s.get("maxLength"), len(value)):
            return False
        pattern = s.get("pattern")
        return not isinstance(pattern, str) or self.search(pattern, value)

    def valid_array(self, s: Mapping[str, Any], value: list[Any], depth: int) -> bool:
        if len(value) < _int(s.get("minItems"), 0) or len(value) > _int(s.get("maxItems"), len(value)):
            return False
        if s.get("uniqueItems") and len({_key(v) for v in value}) != len(value):
            return False
        items = s.get("items", True)
        prefix, rest = (
            (items, s.get("additionalItems", True))
            if isinstance(items, list)
            else (s.get("prefixItems") or [], items)
        )
        return all(
            self.valid(prefix[i] if i < len(prefix) else rest, v, depth + 1) for i, v in enumerate(value)
        )

    def valid_object(self, s: Mapping[str, Any], value: dict[str, Any], depth: int) -> bool:
        least, most = _int(s.get("minProperties"), 0), _int(s.get("maxProperties"), len(value))
        if len(value) < least or len(value) > most:
            return False
        if any(name not in value for name in s.get("required", ())):
            return False
        for name, deps in (s.get("dependentRequired") or {}).items():
            if name in value and any(d not in value for d in deps):
                return False
        props = s.get("properties") or {}
        patterns = s.get("patternProperties") or {}
        extra = s.get("additionalProperties", True)
        for name, v in value.items():
            matched = [sub for p, sub in patterns.items() if self.search(p, name)]
            if name in props:
                matched.append(props[name])
            elif not matched:
                matched.append(extra)
            if not all(self.valid(sub, v, depth + 1) for sub in matched):
                return False
        return True


def _bound(flat: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    """The tighter of a closed and an open bound, and whether it is open (draft 4's boolean
    exclusiveMinimum/Maximum included)."""
    closed, opened = flat.get(inclusive), flat.get(exclusive)
    closed = closed if _is_number(closed) else None
    if opened is True:
        return closed, closed is not None
    if not _is_number(opened):
        return closed, False
    if closed is None:
        return opened, True
    tighter_open = opened >= closed if inclusive == "minimum" else opened <= closed
    return (opened, True) if tighter_open else (closed, False)


def _window(low: Any, high: Any, span: int) -> tuple[Any, Any]:
    """A modest range inside [low, high]: readable numbers even for huge or missing bounds."""
    if low is None and high is None:
        return 0, span
    if low is None:
        return (high - span if high < 0 else min(0, high)), high
    if high is None:
        return low, max(low, 0) + span
    if high - low <= span:
        return low, high
    centre = min(max(0, low), high)
    return (centre, centre + span) if centre + span <= high else (max(low, high - span), high)
