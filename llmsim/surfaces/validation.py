"""Turn a pydantic ValidationError into the 400 OpenAI would send.

OpenAI reports one problem per request, names the offending field as a path
(``messages[0].content``) and uses a small set of codes. Pydantic's error locations also contain
union tags (``'user'``, ``'str'``, ``'list[...]'``); walking the location against the request
body keeps only the steps that exist in it, which drops the tags without knowing their names.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from llmsim.errors import APIError, invalid_json, shorten

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "none_required": "null",
}


# pydantic's bound errors -> (its context key, the operator, OpenAI's wording)
_BOUNDS = {
    "greater_than_equal": ("ge", ">=", "below"),
    "greater_than": ("gt", ">", "below"),
    "less_than_equal": ("le", "<=", "above"),
    "less_than": ("lt", "<", "above"),
}


def type_name(value: Any) -> str:
    """A JSON value's type as OpenAI names it in its errors ('an integer', 'null' ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _param(body: Any, loc: tuple[int | str, ...], missing: bool) -> str | None:
    path = ""
    node = body
    for i, step in enumerate(loc):
        if (
            isinstance(node, dict)
            and isinstance(step, str)
            and step in node
            or isinstance(node, list)
            and isinstance(step, int)
            and 0 <= step < len(node)
        ):
            node = node[step]
        elif missing and i == len(loc) - 1:
            node = None
        else:
            continue  # a union tag, not a step in the body
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
    return path or None


# A body's count of JSON values bounds what validating it costs (about a microsecond a value,
# holding the event loop); a large body is mostly long strings, which cost next to nothing.
MAX_JSON_VALUES = 50_000
_CHEAP_BYTES = 256 * 1024  # bodies this small cannot hold enough values to matter


def check_complexity(raw: bytes) -> None:
    """Refuse a body of more than MAX_JSON_VALUES values before any parser builds them, in a few
    C-speed passes over the bytes: strings are counted by their quotes, and the separators
    (``,`` ``[`` ``{``) only outside strings."""
    if len(raw) <= _CHEAP_BYTES:
        return
    # Without any backslash (single-byte counts are the fast ones) no quote is escaped.
    escapes = raw.count(b"\\") != 0
    plain = raw.replace(b"\\\\", b"") if escapes else raw  # an escaped backslash escapes no quote
    strings = (plain.count(b'"') - (plain.count(b'\\"') if escapes else 0)) // 2
    if strings <= MAX_JSON_VALUES:
        separators = (b",", b"[", b"{")
        if strings + sum(map(plain.count, separators)) <= MAX_JSON_VALUES:
            return  # even counting those inside strings
        outside = b"".join((plain.replace(b'\\"', b"") if escapes else plain).split(b'"')[::2])
        if strings + sum(map(outside.count, separators)) <= MAX_JSON_VALUES:
            return
    raise APIError(
        400,
        f"The request has too many JSON values: llmsim accepts at most {MAX_JSON_VALUES} in one body.",
        code="request_too_complex",
    )


def _quote(values: Any) -> str:
    items = [f"'{v}'" for v in values]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f", and {items[-1]}"


def to_api_error(exc: ValidationError, raw: bytes) -> APIError:
    errors = exc.errors(include_url=False)
    if errors[0]["type"] in ("json_invalid", "json_type"):
        return invalid_json()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return invalid_json()
    # Of the alternatives a union tried, the one that got deepest into the body is what the
    # client meant ("text" must be a string), not the first ("content" must be a string).
    # At equal depth, an alternative whose type matched ("stop" is an array, but too long) beats
    # one that merely had the wrong type.
    first = max(
        errors,
        key=lambda e: (len(_param(body, e["loc"], e["type"] == "missing") or ""), e["type"] not in _EXPECTED),
    )
    kind = first["type"]
    param = _param(body, first["loc"], kind == "missing")
    value = first.get("input")
    ctx = first.get("ctx", {})
    where = f"'{param}'" if param else "request body"

    if kind == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind in _EXPECTED:
        # Every alternative of a union fails at the same place; name them all, like OpenAI does.
        expected = [
            _EXPECTED[e["type"]]
            for e in errors
            if e["type"] in _EXPECTED and _param(body, e["loc"], False) == param
        ]
        expected = list(dict.fromkeys(expected))
        wanted = expected[0] if len(expected) == 1 else "one of " + " or ".join(expected)
        return APIError(
            400,
            f"Invalid type for {where}: expected {wanted}, but got {type_name(value)} instead.",
            param,
            "invalid_type",
        )
    if kind in ("literal_error", "union_tag_invalid", "enum"):
        if kind == "union_tag_invalid":
            value = ctx.get("tag")
            allowed = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
            param = f"{param}.{ctx.get('discriminator', '').strip(chr(39))}" if param else param
        else:
            allowed = [
                t.strip().strip("'") for t in str(ctx.get("expected", "")).replace(" or ", ",").split(",")
            ]
        allowed = [a for a in allowed if a]
        return APIError(
            400,
            f"Invalid value: '{shorten(value)}'. Supported values are: {_quote(allowed)}.",
            param,
            "invalid_value",
        )
    if kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "")).strip("'")
        param = f"{param}.{field}" if param else field
        return APIError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind in _BOUNDS:
        key, op, side = _BOUNDS[kind]
        bound = ctx.get(key)
        number = "decimal" if isinstance(bound, float) else "integer"
        return APIError(
            400,
            f"Invalid {where}: {number} {side} {'minimum' if side == 'below' else 'maximum'} value. "
            f"Expected a value {op} {bound}, but got {shorten(value)} instead.",
            param,
            f"{number}_{side}_{'min' if side == 'below' else 'max'}_value",
        )
    if kind == "too_short":
        if not value:
            return APIError(
                400,
                f"Invalid {where}: empty array. Expected an array with minimum length "
                f"{ctx.get('min_length')}, but got an empty array instead.",
                param,
                "empty_array",
            )
        return APIError(
            400,
            f"Invalid {where}: array too short. Expected an array with minimum length "
            f"{ctx.get('min_length')}, but got an array with length {ctx.get('actual_length')} instead.",
            param,
            "array_below_min_length",
        )
    if kind == "too_long":
        return APIError(
            400,
            f"Invalid {where}: array too long. Expected an array with maximum length "
            f"{ctx.get('max_length')}, but got an array with length {ctx.get('actual_length')} instead.",
            param,
            "array_above_max_length",
        )
    if kind == "string_pattern_mismatch":
        return APIError(
            400,
            f"Invalid {where}: string does not match pattern. Expected a string that matches the "
            f"pattern '{ctx.get('pattern')}'.",
            param,
            "invalid_value",
        )
    if kind == "string_too_long":
        return APIError(
            400,
            f"Invalid {where}: string too long. Expected a string with maximum length "
            f"{ctx.get('max_length')}, but got a string with length {len(value)} instead.",
            param,
            "string_above_max_length",
        )
    return APIError(400, f"Invalid {where}: {shorten(first['msg'])}.", param, "invalid_value")
