"""Spec-driven fuzzing of POST /v1/chat/completions on a real instance, with schemathesis.

The requests come from OpenAI's own request schema (the vendored subset in tests/spec/); every
answer must not be a 5xx, must have a documented content type, and must match OpenAI's schemas:
a completion, a stream whose every event is a chunk (or ``[DONE]``), or the error envelope.
Hypothesis is derandomized and bounded, so a run is the same every time and takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.servers import Server, run_server

SPEC = Path(__file__).parent / "spec" / "openai_schemas.json"
REQUEST = "CreateChatCompletionRequest"
CHAT = "/v1/chat/completions"
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4", "gpt-3.5-turbo"]  # served by the instance below
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    deadline=None,  # each example is an HTTP round trip; the bound is the number of examples
    derandomize=True,  # the same examples every run: no flakes, failures reproduce
    database=None,
    suppress_health_check=list(HealthCheck),  # the request schema is large; generation is slow
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document(models: list[str] | None, stream: bool = False) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the one operation, built from the vendored component schemas.

    ``models``: the model IDs requests may name (None: anything OpenAI's schema allows, so
    mostly unknown models); ``stream``: every request asks for a stream. A stream is documented event by event: each ``data`` is ``[DONE]``
    or a JSON chunk (OpenAI's own document puts the chunk schema on the stream as a whole).
    """
    schemas = json.loads(SPEC.read_text())["components"]["schemas"]
    assert REQUEST in schemas, (
        f"tests/spec/openai_schemas.json lacks {REQUEST}: add it to ROOTS in tests/spec/regenerate.py "
        "and regenerate"
    )
    request: dict[str, Any] = ref(REQUEST)
    narrower: dict[str, Any] = {}
    if models is not None:
        narrower["model"] = {"enum": models}
    if stream:
        narrower["stream"] = {"const": True}
    if narrower:
        request = {"allOf": [request, {"properties": narrower, "required": sorted(narrower)}]}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": ref("CreateChatCompletionStreamResponse"),
                },
            }
        },
    }
    operation = {
        "operationId": "createChatCompletion",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {
                "description": "A completion, or a stream of chunks",
                "content": {
                    "application/json": {"schema": ref("CreateChatCompletionResponse")},
                    "text/event-stream": {"schema": event},
                },
            },
            "default": {
                "description": "OpenAI's error envelope",
                "content": {"application/json": {"schema": ref("ErrorResponse")}},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenAI chat completions (vendored subset)", "version": "1"},
        "paths": {CHAT: {"post": operation}},
        "components": {"schemas": schemas},
    }


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with run_server(["--instance-id", "sim-fuzz", "--models", ",".join(MODELS)]) as srv:
        yield srv


@cache
def cases(models: tuple[str, ...] | None, stream: bool, mode: GenerationMode) -> st.SearchStrategy[Any]:
    schema = schemathesis.openapi.from_dict(document(list(models) if models else None, stream))
    return schema[CHAT]["POST"].as_strategy(generation_mode=mode)


def fuzz(server: Server, data: st.DataObject, strategy: st.SearchStrategy[Any]) -> None:
    case = data.draw(strategy, label="case")
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_valid_requests_for_served_models(server: Server, data: st.DataObject) -> None:
    """Requests valid by OpenAI's schema, for models the instance serves: mostly 200s, and the
    400s OpenAI also gives to bodies its schema allows (stream_options without stream,
    top_logprobs without logprobs, tool_choice without tools ...)."""
    fuzz(server, data, cases(tuple(MODELS), False, GenerationMode.POSITIVE))


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_valid_streaming_requests(server: Server, data: st.DataObject) -> None:
    """The same with ``stream: true``: every event of a 200 is a chunk or ``[DONE]``."""
    fuzz(server, data, cases(tuple(MODELS), True, GenerationMode.POSITIVE))


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_requests_breaking_the_schema(server: Server, data: st.DataObject) -> None:
    """Requests that break OpenAI's schema somewhere, for any model name: refused in the
    envelope (400, or 404 for an unknown model), never a 5xx."""
    fuzz(server, data, cases(None, False, GenerationMode.NEGATIVE))
