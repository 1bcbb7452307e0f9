"""How a surface declares its routes: :class:`RawRoute` (a lean ASGI endpoint that carries its own
OpenAPI description) and the helpers that write those descriptions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from starlette.routing import Route, Router, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from llmsim.api_models import ErrorResponse

REF = "#/components/schemas/{model}"
SSE_OR_JSON = {
    "application/json": {"schema": {"type": "object"}},
    "text/event-stream": {"schema": {"type": "string"}},
}
JSON_ONLY = {"application/json": {"schema": {"type": "object"}}}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(model)}}}


def errors(*statuses: int, envelope: str = "OpenAI's") -> dict[str, Any]:
    error = {"application/json": {"schema": ref(ErrorResponse)}}
    return {
        str(status): {"description": f"An error in {envelope} envelope", "content": error}
        for status in statuses
    }


class RawRoute(Route):
    """A hot route: its endpoint is a plain ASGI callable that reads the body and sends ASGI
    messages itself, with no FastAPI (or Starlette) request/response layer. FastAPI cannot see
    inside it, so it carries its OpenAPI ``operation`` and the ``schemas`` that references."""

    def __init__(
        self,
        path: str,
        endpoint: ASGIApp,
        *,
        methods: Sequence[str],
        operation: dict[str, Any],
        schemas: Sequence[type[BaseModel]] = (),
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.operation = operation
        self.schemas = tuple(schemas)


def post(
    path: str,
    endpoint: ASGIApp,
    request: type[BaseModel],
    *,
    tag: str,
    summary: str,
    operation_id: str,
    description: str,
    answer: str,
    statuses: Sequence[int],
    content: dict[str, Any] = SSE_OR_JSON,
    envelope: str = "OpenAI's",
) -> RawRoute:
    """A described ``POST`` route whose body is ``request``: the common case of a surface."""
    return RawRoute(
        path,
        endpoint,
        methods=["POST"],
        schemas=[request],
        operation={
            "tags": [tag],
            "summary": summary,
            "description": description,
            "operationId": operation_id,
            "requestBody": body(request),
            "responses": {
                "200": {"description": answer, "content": content},
                **errors(*statuses, envelope=envelope),
            },
        },
    )


class FixedPaths:
    """The router, with the surfaces' fixed ``POST`` paths found by one dict lookup first.

    Starlette tries its routes in order, one regex each: the sixth surface paid five misses on
    every request. What the router would add to the scope for such a route (its endpoint, no
    path parameters, the route itself) is added here; every other request goes to the router.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.fixed: dict[str, RawRoute] = {}
        for route in router.routes:
            if isinstance(route, RawRoute) and not route.param_convertors and route.methods == {"POST"}:
                self.fixed.setdefault(route.path, route)  # the first, as the router would pick

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.fixed.get(get_route_path(scope))
            if route is not None:
                scope["router"] = self.router
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                await route.app(scope, receive, send)
                return
        await self.router(scope, receive, send)
