"""Regenerate tests/spec/openai_schemas.json from OpenAI's published OpenAPI spec.

Usage: python tests/spec/regenerate.py [path/to/openapi.json]
(default: ../shared/openai-openapi/openapi.json next to the repository).

Keeps only the component schemas the tests validate against, plus everything they reference,
and rewrites OpenAPI 3.0's ``nullable: true`` (still used inside the 3.1 document) into JSON
Schema's ``type: [..., "null"]`` so a standard validator reads it as OpenAI means it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = [
    "CreateChatCompletionRequest",  # for tests/test_schemathesis.py
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateResponse",  # Responses API (issue 14)
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
]
HERE = Path(__file__).parent
DEFAULT_SPEC = HERE.parents[2] / "shared" / "openai-openapi" / "openapi.json"
PREFIX = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(PREFIX):
            found.add(ref[len(PREFIX) :])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
            else:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


def main() -> None:
    spec_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SPEC
    schemas = json.loads(spec_path.read_text())["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += _refs(schemas[name])
    subset = {name: _nullable(schemas[name]) for name in sorted(keep)}
    out = {
        "source": "OpenAI OpenAPI spec (MIT), components.schemas subset; see tests/spec/LICENSE",
        "roots": ROOTS,
        "components": {"schemas": subset},
    }
    (HERE / "openai_schemas.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    (HERE / "LICENSE").write_text((spec_path.parent / "LICENSE").read_text())
    print(f"wrote {len(subset)} schemas to {HERE / 'openai_schemas.json'}")


if __name__ == "__main__":
    main()
