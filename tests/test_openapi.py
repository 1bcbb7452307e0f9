"""The FastAPI front (issue 13): ``/openapi.json`` describes every route the app serves, with the
request bodies it validates and typed control models; ``/docs`` serves Swagger UI on it; a
parameter FastAPI rejects is still a 400 in OpenAI's envelope."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from llmsim.app import ApiRoute, create_app
from llmsim.errors import APIError
from llmsim.settings import RUNTIME_SETTINGS, Settings
from tests.servers import Server, run_server

TIMEOUT = 10.0
FASTAPI_OWN = {"/openapi.json", "/docs", "/docs/oauth2-redirect"}  # the docs themselves


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with run_server() as server:
        yield server


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200
    return response.json()


def served() -> tuple[set[tuple[str, str]], set[str]]:
    """(path, method) of every route the app serves, and the paths it leaves out of the schema."""
    router = create_app(Settings()).app.router  # behind the Pipeline: FastAPI's router
    operations, hidden = set(), set()
    for route in router.routes:
        if not route.include_in_schema:
            hidden.add(route.path)
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # OpenAPI has no path converters
        operations |= {(path, method.lower()) for method in route.methods - {"HEAD"}}
    return operations, hidden


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_schema(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body = spec["paths"][path][method]["requestBody"]
    return resolve(spec, body["content"]["application/json"]["schema"])


def test_every_route_is_described_and_nothing_else(spec: dict[str, Any]) -> None:
    operations, hidden = served()
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert operations - described == set(), "served but not described"
    assert described - operations == set(), "described but not served"
    assert hidden == FASTAPI_OWN
    expected = {
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model_id}", "get"),
        ("/health", "get"),
        ("/", "get"),
        ("/metrics", "get"),
        ("/llmsim/config", "get"),
        ("/llmsim/config", "patch"),
        ("/llmsim/reset", "post"),
        ("/llmsim/stats", "get"),
        ("/llmsim/requests", "get"),
    }
    assert expected <= operations


def test_every_operation_names_its_responses_and_every_ref_resolves(spec: dict[str, Any]) -> None:
    ids = []
    for path, ops in spec["paths"].items():
        for method, operation in ops.items():
            ids.append(operation["operationId"])
            responses = operation["responses"]
            assert "200" in responses and responses["200"]["description"], (path, method)
            assert "422" not in responses, f"{method} {path}: invalid input is a 400, never FastAPI's 422"
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    assert len(ids) == len(set(ids)), "operation IDs must be unique"
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', httpx.Response(200, json=spec).text))
    assert refs <= set(spec["components"]["schemas"]), refs - set(spec["components"]["schemas"])


def test_chat_completions_body_is_the_surface_model(spec: dict[str, Any]) -> None:
    schema = body_schema(spec, "/v1/chat/completions", "post")
    assert {"messages", "model"} <= set(schema["required"])
    messages = schema["properties"]["messages"]
    assert messages["type"] == "array" and messages["minItems"] == 1
    roles = {
        resolve(spec, ref)["properties"]["role"]["const"] for ref in messages["items"]["oneOf"]
    }  # the discriminated union of message kinds
    assert {"system", "user", "assistant", "tool"} <= roles
    content = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(content)


def test_control_models_are_typed(spec: dict[str, Any]) -> None:
    patch = body_schema(spec, "/llmsim/config", "patch")
    assert patch["additionalProperties"] is False
    assert set(patch["properties"]) >= RUNTIME_SETTINGS
    assert "port" not in patch["properties"] and "admin_token" not in patch["properties"]
    for path, method in [("/llmsim/config", "get"), ("/llmsim/config", "patch"), ("/llmsim/stats", "get")]:
        ok = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert resolve(spec, ok)["properties"], (path, method)
    parameters = spec["paths"]["/llmsim/requests"]["get"]["parameters"]
    assert {p["name"]: p["in"] for p in parameters} == {"trace": "query", "since": "query", "limit": "query"}
    limit = next(p["schema"] for p in parameters if p["name"] == "limit")
    assert limit["type"] == "integer" and limit["minimum"] == 0 and limit["maximum"] > 0


def test_docs_page_loads_the_schema(server: Server) -> None:
    response = httpx.get(f"{server.url}/docs", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text and "swagger-ui" in response.text
    assert response.headers["x-llmsim-instance"]  # through the Pipeline like every response


def test_described_routes_still_answer_in_the_envelope(server: Server) -> None:
    response = httpx.get(f"{server.url}/llmsim/requests", params={"limit": "many"}, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"
    response = httpx.get(f"{server.url}/v1/models/no-such-model", timeout=TIMEOUT)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_a_parameter_fastapi_rejects_becomes_a_400_naming_it() -> None:
    async def typed(count: int) -> dict[str, int]:
        return {"count": count}

    app = FastAPI(routes=[ApiRoute("/typed", typed, methods=["GET"])])
    transport = httpx.ASGITransport(app=app.router)  # as the Pipeline calls it: no middleware stack

    async def ask(count: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/typed", params={"count": count})

    assert asyncio.run(ask("2")).json() == {"count": 2}
    with pytest.raises(APIError) as raised:  # what the Pipeline renders in the envelope
        asyncio.run(ask("two"))
    assert raised.value.status == 400 and raised.value.param == "count"
