"""Builds the ASGI app from Settings.

The outermost layer, :class:`InstanceMiddleware`, is the part of the pipeline every response
passes through, whatever produced it (a route, a 404, a 405, an unhandled error): it stamps the
instance and request IDs, enforces the body limit and keeps the per-instance counters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmsim import __version__
from llmsim.errors import APIError, body_too_large
from llmsim.generation import generate
from llmsim.identity import INSTANCE_HEADER, REQUEST_ID_HEADER, resolve_instance_id
from llmsim.settings import Settings
from llmsim.stats import Stats
from llmsim.surfaces import models as models_surface
from llmsim.surfaces import openai_chat

log = logging.getLogger("llmsim")

JSON = "application/json"


_INSTANCE = INSTANCE_HEADER.encode()
_REQUEST_ID = REQUEST_ID_HEADER.encode()


class _BodyTooLarge(Exception):
    pass


class InstanceMiddleware:
    def __init__(
        self, app: ASGIApp, instance_id: str, stats: Stats, max_body: int, paths: dict[Any, str]
    ) -> None:
        self.app = app
        self.paths = paths  # endpoint function -> route path, to count requests per route
        self.instance = instance_id.encode()
        self.stats = stats
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        length = 0
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                request_id = value[:200]
            elif name == b"content-length":
                length = int(value) if value.isdigit() else 0
        request_id = request_id or b"req_" + os.urandom(16).hex().encode()
        status = 500
        stamp = [(_INSTANCE, self.instance), (_REQUEST_ID, request_id)]

        async def send_stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *stamp]
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _BodyTooLarge
            return message

        self.stats.in_flight += 1
        try:
            if length > self.max_body:
                await _send_error(body_too_large(self.max_body), send_stamped)
            else:
                await self.app(scope, receive_limited, send_stamped)
        finally:
            self.stats.in_flight -= 1
            endpoint = self.paths.get(scope.get("endpoint"), "other")
            self.stats.by_endpoint[(endpoint, status)] += 1


async def _send_error(error: APIError, send: Send) -> None:
    body = error.body()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_response(error: APIError) -> Response:
    return Response(error.body(), error.status, error.headers or None, JSON)


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    instance_id = resolve_instance_id(settings)
    stats = Stats()
    served = frozenset(settings.models)
    log.info("llmsim %s instance %s serving %s", __version__, instance_id, ", ".join(settings.models))

    app = FastAPI(title="llmsim", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.instance_id = instance_id
    app.state.stats = stats

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return _error_response(exc)

    @app.exception_handler(_BodyTooLarge)
    async def too_large(request: Request, exc: _BodyTooLarge) -> Response:
        return _error_response(body_too_large(settings.max_body_bytes))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        return _error_response(APIError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(APIError(400, "Invalid request.", code="invalid_value"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(
            APIError(500, "The server had an error while processing your request.", code="internal_error")
        )

    async def root(request: Request) -> Response:
        return _json(
            {
                "name": "llmsim",
                "version": __version__,
                "instance": instance_id,
                "endpoints": sorted({getattr(r, "path", "") for r in app.routes} - {""}),
            }
        )

    async def health(request: Request) -> Response:
        return _json({"status": "healthy", "instance": instance_id, "uptime_s": round(stats.uptime_s, 3)})

    async def stats_endpoint(request: Request) -> Response:
        return _json({"instance": instance_id, **stats.snapshot()})

    async def list_models(request: Request) -> Response:
        return _json(models_surface.model_list(settings.models))

    async def get_model(request: Request) -> Response:
        return _json(models_surface.model(request.path_params["model_id"], settings.models))

    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        body, neutral = openai_chat.parse(raw, served)
        generation = generate(neutral, settings)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = openai_chat.render_stream(generation, body.model, instance_id, include_usage)
            return StreamingResponse(
                _aiter(chunks),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        return Response(openai_chat.render(generation, body.model, instance_id), media_type=JSON)

    # Plain Starlette routes: the handlers read the body themselves, so FastAPI's dependency
    # machinery would only add per-request cost.
    app.add_route("/", root, ["GET"])
    app.add_route("/health", health, ["GET"])
    app.add_route("/llmsim/stats", stats_endpoint, ["GET"])
    app.add_route("/v1/models", list_models, ["GET"])
    app.add_route("/v1/models/{model_id:path}", get_model, ["GET"])
    app.add_route("/v1/chat/completions", chat_completions, ["POST"])

    paths = {route.endpoint: route.path for route in app.routes if hasattr(route, "endpoint")}
    return InstanceMiddleware(app, instance_id, stats, settings.max_body_bytes, paths)


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)
