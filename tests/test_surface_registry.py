"""A new surface is one small class and a route: this throwaway one gets every shared stage (auth,
faults, the journal, identity, usage) from llmsim.surfaces.endpoint.Generate without a line of its
own for them (issue 13)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.routing import Route
from starlette.types import Scope

from llmsim.app import create_app
from llmsim.engine import Turn
from llmsim.generation import Generation, GenerationRequest, PromptMessage
from llmsim.settings import Settings
from llmsim.surfaces.endpoint import Generate, Reply


class Plain:
    """``{"model": M, "text": T}`` in, ``{"text": ..., "tokens": N}`` out."""

    wire = None  # OpenAI's envelope for errors

    def check(self, scope: Scope) -> None:
        pass

    def parse(self, raw: bytes, models: frozenset[str]) -> tuple[Any, GenerationRequest]:
        data = json.loads(raw)
        return data, GenerationRequest(data["model"], [PromptMessage("user", (data["text"],))])

    def reply(self, data: Any, generation: Generation, turn: Turn, instance: str) -> Reply:
        choice = generation.choices[0]
        return Reply(json.dumps({"text": choice.text, "tokens": choice.tokens}).encode())


def test_a_throwaway_surface_gets_every_shared_stage() -> None:
    app = create_app(Settings(instance_id="sim-plain", api_keys="sk-plain"))
    route = Route("/v1/plain", Generate(app.engine, Plain()), methods=["POST"])
    app.app.router.routes.insert(0, route)
    app.paths[route.endpoint] = route.path

    async def run() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"model": "gpt-4o", "text": "hello plain world"}
            auth = {"authorization": "Bearer sk-plain"}
            ok = await client.post("/v1/plain", json=body, headers={**auth, "x-llmsim-trace": "plain-1"})
            refused = await client.post("/v1/plain", json=body)
            failed = await client.post(
                "/v1/plain", json=body, headers={**auth, "x-llmsim-fault": "server_error"}
            )
            journal = await client.get("/llmsim/requests", params={"trace": "plain-"})
            return ok, refused, failed, journal

    ok, refused, failed, journal = asyncio.run(run())
    assert ok.status_code == 200 and ok.json()["text"] == 'You said: "hello plain world"'
    assert ok.headers["x-llmsim-instance"] == "sim-plain"  # identity, stamped by the Pipeline
    assert refused.status_code == 401 and refused.json()["error"]["code"] is None  # auth
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"  # faults
    (entry,) = journal.json()["entries"]  # the journal, with usage
    assert entry["path"] == "/v1/plain" and entry["model"] == "gpt-4o"
    assert entry["usage"]["completion_tokens"] == ok.json()["tokens"]
