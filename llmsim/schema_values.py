"""A JSON value valid against a JSON Schema: tool-call arguments and structured outputs.

Hand-written rather than a library: ``hypothesis-jsonschema`` is built for tests (slow, and it
shrinks), and ``jsf`` (last release March 2024) compiles each schema into a pydantic model tree,
draws from the global ``random`` (so no determinism from a caller's rng) and pulls in faker, rstr
and smart-open. What OpenAI function and structured-output schemas use fits in one walk over the
schema per call, with no compilation and no dependency.

Supported: ``type`` (also lists, and OpenAPI's ``nullable``), ``enum``, ``const``, objects
(``properties``, ``required``, ``additionalProperties``, ``patternProperties``, min/max
properties, ``dependentRequired``), arrays (``items``, ``prefixItems``, draft-7 tuple ``items``,
min/max items, ``uniqueItems``), strings (lengths, ``format``, ``pattern``), numbers (bounds,
exclusive bounds, ``multipleOf``), ``anyOf``, ``oneOf`` (the value matches exactly one branch when
a few tries find such a value), ``allOf`` (merged), ``not`` (retried), and local ``$ref``
(``#``, ``#/$defs/...``, ``#/definitions/...``, any JSON pointer in the document).

Limits, all best effort rather than errors:

- ``pattern``: strings are built from the parsed regex (lookarounds ignored, unbounded repeats
  kept short), then checked with ``re.search``; a pattern combined with lengths it cannot meet,
  or two patterns merged by ``allOf`` (only the first is used), may give a non-matching string.
- Recursion: past ``MAX_REF_DEPTH`` ``$ref`` expansions on a path, values are minimal (no optional
  properties, ``minItems`` items, non-recursive ``anyOf``/``oneOf`` branches and ``null`` first);
  ``nullable: true`` yields ``null`` only there, since JSON Schema itself ignores the keyword.
- Unsatisfiable schemas (empty ranges, conflicting ``allOf`` branches) give some value anyway.
- Not supported: remote or ``$id``-relative refs (treated as ``{}``), ``contains``,
  ``if``/``then``/``else``, ``unevaluated*``, ``propertyNames``, ``dependentSchemas``.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import re
import string
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

try:  # Python 3.11+
    from re import _parser as _sre
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]

MAX_REF_DEPTH = 3  # $ref expansions on one path before values turn minimal
_HARD_DEPTH = 40  # a schema that cannot stop recursing gives null here
_RETRIES = 200  # candidate values one call may throw away (oneOf, not, patterns, uniqueItems)

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


def generate(schema: Mapping[str, Any] | bool, rng: random.Random) -> Any:
    """A value valid against `schema`, deterministic for a given rng state."""
    return _Generator(schema, rng).value(schema, 0)


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
        quotient = value / step
        try:
            return int(quotient) == quotient
        except OverflowError:
            return (Fraction(value) / Fraction(step)).denominator == 1
    return not value % step


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


# ---------------------------------------------------------------------------------------------
# Merging (allOf, $ref siblings, a chosen anyOf/oneOf branch): one schema meaning "both".


def _as_dict(schema: Any) -> dict[str, Any]:
    if schema is True or schema is None:
        return {}
    if schema is False:
        return {"not": {}}
    return dict(schema)


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, theirs in b.items():
        if key not in out:
            out[key] = theirs
            continue
        ours = out[key]
        if key in _ANNOTATIONS or _equal(ours, theirs):
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
        elif key == "enum":
            out[key] = [x for x in ours if any(_equal(x, y) for y in theirs)] or ours
        elif key in ("required", "allOf"):
            out[key] = [*ours, *(x for x in theirs if x not in ours)]
        elif key in ("properties", "patternProperties", "dependentRequired"):
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
            joined = [{"allOf": [x, y]} for x, y in zip(ours, theirs, strict=False)]
            out[key] = joined + list(ours[len(theirs) :]) + list(theirs[len(ours) :])
        elif key in ("items", "additionalProperties") and not isinstance(ours, list):
            out[key] = False if ours is False or theirs is False else {"allOf": [ours, theirs]}
        elif key == "not":
            out[key] = {"anyOf": [ours, theirs]}
        elif key == "multipleOf" and _is_number(ours) and _is_number(theirs):
            a_, b_ = Fraction(str(ours)), Fraction(str(theirs))
            lcm = Fraction(math.lcm(a_.numerator, b_.numerator), math.gcd(a_.denominator, b_.denominator))
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
        if mine.get("additionalProperties") is False and "properties" in out:
            allowed = set(mine.get("properties", ())) | set(out.get("required", ()))
            patterns = list(mine.get("patternProperties", ()))
            out["properties"] = {
                n: s
                for n, s in out["properties"].items()
                if n in allowed or any(re.search(p, n) for p in patterns)
            }
    return out


# ---------------------------------------------------------------------------------------------
# Strings from a regular expression: a walk over Python's own parse tree.

_PRINTABLE = string.ascii_letters + string.digits + " _-.,"
_CATEGORIES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters,
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": " -.,",
}


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


def _emit(tree: Any, rng: random.Random, out: list[str], groups: dict[int, str]) -> None:
    for op, arg in tree:
        kind = _name(op)
        if kind == "LITERAL":
            out.append(chr(arg))
        elif kind == "NOT_LITERAL":
            out.append(rng.choice([c for c in _PRINTABLE if ord(c) != arg]))
        elif kind == "ANY":
            out.append(rng.choice(string.ascii_letters))
        elif kind == "IN":
            out.append(_pick_in(arg, rng))
        elif kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            for _ in range(rng.randint(low, min(high, low + 3))):
                _emit(sub, rng, out, groups)
        elif kind == "SUBPATTERN":
            inner: list[str] = []
            _emit(arg[-1], rng, inner, groups)
            if arg[0] is not None:
                groups[arg[0]] = "".join(inner)
            out += inner
        elif kind == "BRANCH":
            _emit(rng.choice(arg[1]), rng, out, groups)
        elif kind == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif kind == "GROUPREF_EXISTS":
            branch = arg[1] if arg[0] in groups else arg[2]
            if branch is not None:
                _emit(branch, rng, out, groups)
        elif kind == "ATOMIC_GROUP":
            _emit(arg, rng, out, groups)
        # AT (anchors), ASSERT, ASSERT_NOT: nothing to write.


@lru_cache(maxsize=512)
def _parse(pattern: str) -> Any:
    """The regex's parse tree, shared: _emit only reads it."""
    try:
        return _sre.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def _from_pattern(pattern: str, rng: random.Random) -> str | None:
    tree = _parse(pattern)
    if tree is None:
        return None
    out: list[str] = []
    _emit(tree, rng, out, {})
    return "".join(out)


# ---------------------------------------------------------------------------------------------


class _Generator:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.retries = _RETRIES
        self._refs: dict[str, Any] = {}
        self._cyclic: dict[str, bool] = {}

    # -- references ----------------------------------------------------------------------------

    def deref(self, ref: str) -> Any:
        if ref in self._refs:
            return self._refs[ref]
        node: Any = self.root if ref.startswith("#") else {}
        for part in ref[1:].split("/")[1:] if node else ():
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = {}
                break
        self._refs[ref] = node
        return node

    def recursive(self, schema: Any, visiting: tuple[str, ...] = ()) -> bool:
        """Whether following `schema`'s $refs can come back to one of them."""
        for ref in _refs_in(schema):
            if ref in visiting:
                return True
            if ref not in self._cyclic:
                self._cyclic[ref] = False  # provisional: a cycle through here is caught by visiting
                self._cyclic[ref] = self.recursive(self.deref(ref), (*visiting, ref))
            if self._cyclic[ref]:
                return True
        return False

    def flatten(self, schema: Any, depth: int) -> tuple[dict[str, Any], int]:
        """`schema` with its $ref and allOf merged in, and the $ref depth reached."""
        flat = _as_dict(schema)
        while ("$ref" in flat or "allOf" in flat) and depth <= _HARD_DEPTH:
            if "$ref" in flat:
                target = _as_dict(self.deref(flat.pop("$ref")))
                flat = _merge(target, flat)
                depth += 1
            if "allOf" in flat:
                for sub in flat.pop("allOf"):
                    flat = _merge(flat, _as_dict(sub))
        return flat, depth

    # -- values --------------------------------------------------------------------------------

    def value(self, schema: Any, depth: int) -> Any:
        flat, depth = self.flatten(schema, depth)
        if depth > _HARD_DEPTH:
            return None
        minimal = depth > MAX_REF_DEPTH
        if "oneOf" in flat:
            return self.one_of(flat, depth)
        if "anyOf" in flat:
            rest = {k: v for k, v in flat.items() if k != "anyOf"}
            branch = flat["anyOf"][self.branch_order(flat["anyOf"], minimal)[0]]
            return self.value(_merge(rest, _as_dict(branch)), depth)
        if "not" in flat:
            rest = {k: v for k, v in flat.items() if k != "not"}
            candidate = self.value(rest, depth)
            while self.valid(flat["not"], candidate) and self.spend():
                candidate = self.value(rest, depth)
            return candidate
        if "const" in flat:
            return copy.deepcopy(flat["const"])
        if "enum" in flat:
            rest = {k: v for k, v in flat.items() if k != "enum"}
            options = [e for e in flat["enum"] if self.valid(rest, e)] or flat["enum"]
            return copy.deepcopy(self.rng.choice(options)) if options else None
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
                candidate = self.value(_merge(rest, _as_dict(branches[i])), depth)
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
        names = [n for n in props if n in required or (not minimal and self.rng.random() < 0.5)]
        names += [n for n in required if n not in names]
        dependent: Mapping[str, list[str]] = flat.get("dependentRequired") or {}
        for name in names:  # grows while iterating: dependents of dependents
            names += [d for d in dependent.get(name, ()) if d not in names]
        most, least = flat.get("maxProperties"), flat.get("minProperties", 0)
        if most is not None and len(names) > most:
            optional = [n for n in names if n not in required]
            drop = set(optional[: len(names) - most])
            names = [n for n in names if n not in drop]
        for name in props:
            if len(names) >= least:
                break
            if name not in names:
                names.append(name)
        extra = 0
        while len(names) < least and flat.get("additionalProperties", True) is not False and extra < least:
            extra += 1
            name = f"{self.rng.choice(_WORDS)}_{extra}"
            if name not in names and not any(re.search(p, name) for p in flat.get("patternProperties", ())):
                names.append(name)
        return {name: self.value(self.property_schema(flat, name), depth) for name in names}

    @staticmethod
    def property_schema(flat: dict[str, Any], name: str) -> Any:
        props = flat.get("properties") or {}
        subs = [props[name]] if name in props else []
        subs += [s for p, s in (flat.get("patternProperties") or {}).items() if re.search(p, name)]
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
        low, high = flat.get("minItems", 0), flat.get("maxItems")
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

    def string(self, flat: dict[str, Any]) -> str:
        low, high = flat.get("minLength", 0), flat.get("maxLength")

        def fits(s: str | None) -> bool:
            return s is not None and low <= len(s) and (high is None or len(s) <= high)

        pattern = flat.get("pattern")
        if isinstance(pattern, str):
            first = None
            for _ in range(10):
                candidate = _from_pattern(pattern, self.rng)
                if candidate is None:
                    break
                first = first if first is not None else candidate
                if fits(candidate) and re.search(pattern, candidate):
                    return candidate
            text = self.text(low, high)
            return text if re.search(pattern, text) or first is None else first
        formatted = self.formatted(flat.get("format"))
        return formatted if fits(formatted) else self.text(low, high)  # type: ignore[return-value]

    def text(self, low: int, high: int | None) -> str:
        words = [self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 3))]
        text = " ".join(words)
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        if high is not None and len(text) > high:
            text = text[:high]
            if text.endswith(" ") and len(text) > low:
                text = text[:-1]
        return text

    def formatted(self, fmt: Any) -> str | None:
        rng = self.rng
        date = f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        time = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
        word = rng.choice(_WORDS)
        if fmt == "date-time":
            return f"{date}T{time}"
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
        return {"date": date, "time": time}.get(fmt) if isinstance(fmt, str) else None

    def number(self, flat: dict[str, Any], integer: bool) -> int | float:
        low, low_open = _bound(flat, "minimum", "exclusiveMinimum")
        high, high_open = _bound(flat, "maximum", "exclusiveMaximum")

        def inside(v: float) -> bool:
            above = low is None or (v > low if low_open else v >= low)
            return above and (high is None or (v < high if high_open else v <= high))

        step = flat.get("multipleOf")
        if _is_number(step) and step > 0:
            return self.multiple(step, low, low_open, high, high_open, integer, inside)
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
        low_open: bool,
        high: float | None,
        high_open: bool,
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
        if schema is True or schema is None:
            return True
        if schema is False:
            return False
        if depth > _HARD_DEPTH:
            return True
        s: Mapping[str, Any] = schema
        if "$ref" in s and not self.valid(self.deref(s["$ref"]), value, depth + 1):
            return False
        types = _types(s)
        if types and not any(_is_type(value, t) for t in types) and not (value is None and s.get("nullable")):
            return False
        if "const" in s and not _equal(value, s["const"]):
            return False
        if "enum" in s and not any(_equal(value, e) for e in s["enum"]):
            return False
        if _is_number(value) and not self.valid_number(s, value):
            return False
        if isinstance(value, str) and not _valid_string(s, value):
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

    def valid_array(self, s: Mapping[str, Any], value: list[Any], depth: int) -> bool:
        if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", len(value)):
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
        if len(value) < s.get("minProperties", 0) or len(value) > s.get("maxProperties", len(value)):
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
            matched = [sub for p, sub in patterns.items() if re.search(p, name)]
            if name in props:
                matched.append(props[name])
            elif not matched:
                matched.append(extra)
            if not all(self.valid(sub, v, depth + 1) for sub in matched):
                return False
        return True


def _valid_string(s: Mapping[str, Any], value: str) -> bool:
    if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", len(value)):
        return False
    pattern = s.get("pattern")
    return not isinstance(pattern, str) or re.search(pattern, value) is not None


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


def _refs_in(schema: Any) -> list[str]:
    """Every $ref under `schema`, without following them."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack += [v for k, v in node.items() if k not in ("enum", "const", "default", "examples")]
        elif isinstance(node, list):
            stack += node
    return found
