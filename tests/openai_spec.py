"""Validate bodies against the vendored subset of OpenAI's OpenAPI component schemas."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

_SPEC = json.loads((Path(__file__).parent / "spec" / "openai_schemas.json").read_text())


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": _SPEC["components"]}
    return Draft202012Validator(schema)


def validate(name: str, body: Any) -> None:
    """Raise with every violation listed if ``body`` does not match OpenAI's ``name`` schema."""
    errors = sorted(_validator(name).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        details = "\n".join(f"  at {list(e.path)}: {e.message}" for e in errors[:10])
        raise AssertionError(f"body does not match OpenAI schema {name}:\n{details}\nbody: {body}")


def rendered(error: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A neutral APIError as OpenAI's wire answers it: (status, the envelope's error, headers)."""
    from llmsim.surfaces.openai_wire import OPENAI

    status, body, headers = OPENAI.render_error(error, b"")
    return status, json.loads(body)["error"], {k.decode(): v.decode() for k, v in headers}
