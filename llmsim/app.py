"""Builds the ASGI app from Settings.

The outermost layer, :class:`Pipeline`, is the part of the pipeline every response
passes through, whatever produced it (a route, a 404, a 405, an unhandled error): it stamps the
instance and request IDs, enforces the body limit and keeps the per-instance counters.
"""

from __future__ import annotations

import logging
import random
import time
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmsim import __version__, latency
from llmsim.content import Content
from llmsim.errors import APIError, body_too_large
from llmsim.generation import generate
from llmsim.identity import INSTANCE_HEADER, REQUEST_ID_HEADER, resolve_instance_id
from llmsim.latency import LatencyModel, Pacer, overrides_from
from llmsim.scheduler import Scheduler
from llmsim.script import Script
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


class Pipeline:
    """The stages every HTTP response goes through once, whatever produced it.

    Identity and request-ID headers, the body limit, the per-instance counters, and the
    rendering of every error (raised by a surface, by the router as a 404/405, or unexpected)
    into the provider's envelope.
    """

    def __init__(
        self, app: ASGIApp, instance_id: str, stats: Stats, max_body: int, paths: dict[Any, str]
    ) -> None:
        self.app = app
        self.paths = paths  # endpoint -> route path, to count requests per route
        self.instance = instance_id.encode()
        self.stats = stats
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The router raises HTTPException for 404/405 (instead of answering in plain text)
        # when it runs inside an app; this is that app.
        scope["app"] = self
        request_id = b""
        length = -1
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                request_id = value[:200]
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
        request_id = request_id or b"req_%032x" % random.getrandbits(128)
        status = 0
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
                raise _BodyTooLarge
            # A declared length is enforced by the HTTP parser; only chunked bodies need counting.
            await self.app(scope, receive if length >= 0 else receive_limited, send_stamped)
        except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
            if status:
                raise  # the response has started; all that is left is to drop the connection
            await _send_error(self._as_api_error(exc, scope), send_stamped)
        finally:
            self.stats.in_flight -= 1
            endpoint = self.paths.get(scope.get("endpoint"), "other")
            self.stats.by_endpoint[(endpoint, status or 500)] += 1

    def _as_api_error(self, exc: Exception, scope: Scope) -> APIError:
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, _BodyTooLarge):
            return body_too_large(self.max_body)
        method, path = scope["method"], scope["path"]
        if isinstance(exc, HTTPException):
            if exc.status_code == 404:
                message = f"Invalid URL ({method} {path})"
            elif exc.status_code == 405:
                message = f"Method {method} is not allowed for {path}."
            else:
                message = str(exc.detail)
            return APIError(exc.status_code, message, headers=dict(exc.headers or {}))
        log.error("unhandled error on %s %s", method, path, exc_info=exc)
        return APIError(500, "The server had an error while processing your request.", code="internal_error")


async def _send_error(error: APIError, send: Send) -> None:
    body = error.body()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    parts = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


class ChatCompletions:
    """``POST /v1/chat/completions`` as a plain ASGI endpoint.

    A token stream is many small writes; sending them straight to the server, without a
    Response object and its disconnect-listener task, is what keeps llmsim near the speed of a
    bare ASGI app. Errors are raised and rendered once, by the Pipeline.
    """

    SSE_HEADERS = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # tells nginx not to buffer the stream
    ]

    def __init__(
        self, settings: Settings, instance_id: str, scheduler: Scheduler, latency: LatencyModel
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.models = frozenset(settings.models)
        self.scheduler = scheduler
        self.latency = latency
        self.content = Content(settings, Script(settings.script) if settings.script else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        body, neutral = openai_chat.parse(await read_body(receive), self.models)
        overrides = overrides_from(scope["headers"])
        neutral.output_tokens = overrides.output_tokens
        if self.content.script is not None:
            neutral.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        generation = generate(neutral, self.content)
        top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        scheduler = self.scheduler
        waiting_since = time.monotonic()
        await scheduler.acquire()  # the queue wait is part of the time to first token
        # The clock starts at arrival, not after parsing: under a burst, the work of the requests
        # ahead is time this one spent "prefilling", as on a real server.
        start = arrived + (time.monotonic() - waiting_since)
        pacer = None
        try:
            slowdown = 1 + self.settings.slowdown * scheduler.load
            plan = self.latency.plan(
                body.model, generation.prompt_tokens, generation.longest, overrides, slowdown
            )
            pacer = None if plan.instant else Pacer(plan, receive, start)
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                events = openai_chat.render_stream(
                    generation, body.model, self.instance_id, include_usage, top_logprobs
                )
                # Headers go out at once, as a provider's do; the first event waits for its token.
                await send({"type": "http.response.start", "status": 200, "headers": self.SSE_HEADERS})
                # Events of one generation step (the role and first token, the last token and the
                # finish) leave in one write.
                for position, step in groupby(events, key=itemgetter(0)):
                    if pacer and not await pacer.until(position):
                        return  # the client went away: stop generating, free the slot
                    chunk = b"".join(event for _, event in step)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            # A non-streamed answer arrives after the whole simulated generation.
            if pacer and not await pacer.until(generation.longest - 1):
                return
            payload = openai_chat.render(generation, body.model, self.instance_id, top_logprobs)
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            scheduler.release()
            if pacer:
                pacer.close()


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    instance_id = resolve_instance_id(settings)
    stats = Stats()
    scheduler = Scheduler(settings.max_concurrency, settings.max_queue, settings.queue_full_status)
    latency_model = latency.from_settings(settings)
    log.info("llmsim %s instance %s serving %s", __version__, instance_id, ", ".join(settings.models))

    async def root(request: Request) -> Response:
        return _json(
            {
                "name": "llmsim",
                "version": __version__,
                "instance": instance_id,
                "endpoints": sorted(paths.values()),
            }
        )

    async def health(request: Request) -> Response:
        return _json(
            {
                "status": "healthy",
                "instance": instance_id,
                "uptime_s": round(stats.uptime_s, 3),
                "running": scheduler.running,
                "waiting": scheduler.waiting,
            }
        )

    async def stats_endpoint(request: Request) -> Response:
        return _json(
            {
                "instance": instance_id,
                **stats.snapshot(),
                "running": scheduler.running,
                "waiting": scheduler.waiting,
            }
        )

    async def list_models(request: Request) -> Response:
        return _json(models_surface.model_list(settings.models))

    async def get_model(request: Request) -> Response:
        return _json(models_surface.model(request.path_params["model_id"], settings.models))

    # Handlers take a Request and read what they need themselves: no framework layer is
    # spent per request on what a route does not use.
    routes = [
        Route(
            "/v1/chat/completions",
            ChatCompletions(settings, instance_id, scheduler, latency_model),
            methods=["POST"],
        ),
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/llmsim/stats", stats_endpoint, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]
    paths = {route.endpoint: route.path for route in routes}
    return Pipeline(Router(routes), instance_id, stats, settings.max_body_bytes, paths)


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)
