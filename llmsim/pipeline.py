"""The outermost layer: what every HTTP response passes through once, whatever produced it.

Identity and request-ID headers, the body limit, the rendering of every error (raised by a
surface or a stage, by the router as a 404/405, or unexpected) into the provider's envelope, and
the accounting: per-instance counters, Prometheus metrics and the access log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmsim.auth import mask
from llmsim.engine import ENDED_EARLY, Engine, turn_of
from llmsim.errors import APIError, Kind, body_too_large
from llmsim.identity import INSTANCE_HEADER, REQUEST_ID_HEADER, TRACE_HEADER
from llmsim.journal import Journal, valid_trace
from llmsim.presence import ClientGone
from llmsim.stats import Stats
from llmsim.surfaces.base import OPENAI, Wire

log = logging.getLogger("llmsim")
access_log = logging.getLogger("llmsim.access")

_INSTANCE = INSTANCE_HEADER.encode()
_REQUEST_ID = REQUEST_ID_HEADER.encode()
_TRACE = TRACE_HEADER.encode()
JSON = b"application/json"
CLIENT_CLOSED = 499  # nginx's name for a request whose client went away first


SHUTTING_DOWN = APIError(503, kind=Kind.SHUTTING_DOWN)


class BodyTooLarge(Exception):
    pass


class Pipeline:
    def __init__(
        self,
        app: ASGIApp,
        engine: Engine,
        stats: Stats,
        max_body: int,
        paths: dict[Any, str],
        json_log: bool = False,
        journal: Journal | None = None,
    ) -> None:
        self.app = app
        self.engine = engine
        self.paths = paths  # endpoint -> route path, to count requests per route
        self.instance = engine.instance_id.encode()
        self.stats = stats
        self.max_body = max_body
        self.json_log = json_log
        self.journal = journal
        # Route path -> the wire of the surface that owns it (its endpoint's ``surface``): errors on
        # that path, even those raised before the route runs, are rendered in its envelope.
        self.surfaces: dict[str, Wire] = {
            path: endpoint.surface for endpoint, path in paths.items() if hasattr(endpoint, "surface")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        # The router raises HTTPException for 404/405 (instead of answering in plain text)
        # when it runs inside an app; this is that app.
        scope["app"] = self
        request_id = b""
        length = -1
        trace = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                request_id = value[:200]
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == _TRACE:
                trace = valid_trace(value)
        request_id = request_id or b"req_%032x" % random.getrandbits(128)
        entry = None
        # The control API's own traffic (polling the journal, among others) stays out of it.
        if self.journal is not None and not scope["path"].startswith("/llmsim/"):
            entry = scope["llmsim.entry"] = self.journal.open(request_id, trace, scope)
        status = 0
        ended = "completed"
        stamp = [(_INSTANCE, self.instance), (_REQUEST_ID, request_id)]
        if self.surfaces:
            surface = self.surfaces.get(scope["path"])
            if surface is not None:
                scope["llmsim.surface"] = surface

        async def send_stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *stamp]
                wire = scope.get("llmsim.surface")  # set by the path, or by the handler
                if wire is not None and wire.request_id_header is not None:
                    message["headers"].append((wire.request_id_header, request_id))
            await send(message)

        self.stats.in_flight += 1
        try:
            if length > self.max_body:
                raise BodyTooLarge
            # A declared length is enforced by the HTTP parser; only chunked bodies need counting.
            await self.app(scope, receive if length >= 0 else self._limited(receive), send_stamped)
        except ENDED_EARLY as exc:
            ended = "client_gone" if isinstance(exc, ClientGone) else "cut"
            started_sending = status != 0
            # Counted as an abort, not a success: the client (or a disconnect fault) cut it short.
            status = CLIENT_CLOSED if isinstance(exc, ClientGone) else status or CLIENT_CLOSED
            turn = turn_of(scope)
            if turn is not None:
                turn.finish_reason = "abort"
                if status == CLIENT_CLOSED and not started_sending:
                    turn.completion_tokens = 0  # gone before the response started
        except asyncio.CancelledError:
            # The shutdown timeout ran out and the server cancels what is left: a clean 503 if
            # nothing was sent yet, else the stream just ends (counted as an abort).
            ended = "shutdown"
            if not status:
                await send_error(SHUTTING_DOWN, send_stamped, scope.get("llmsim.surface"), request_id)
            elif (turn := turn_of(scope)) is not None:
                turn.finish_reason = "abort"
        except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
            if status:
                ended = "cut"
                raise  # the response has started; all that is left is to drop the connection
            error = self._as_api_error(exc, scope)
            await send_error(error, send_stamped, scope.get("llmsim.surface"), request_id)
        finally:
            self.stats.in_flight -= 1
            self._account(scope, status or 500, started, request_id)
            if entry is not None:
                status = status or 500
                ended = "error" if ended == "completed" and status >= 400 else ended
                self.journal.close(entry, status, ended, time.monotonic() - started, turn_of(scope))

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge
            return message

        return receive_limited

    def _account(self, scope: Scope, status: int, started: float, request_id: bytes) -> None:
        endpoint = self.paths.get(scope.get("endpoint"), "other")
        self.stats.by_endpoint[(endpoint, status)] += 1
        turn = turn_of(scope)
        metrics = self.engine.metrics
        if turn is None or not turn.model:
            metrics.counted(endpoint, status)
        else:
            metrics.finished(
                turn.model,
                status,
                turn.prompt_tokens,
                turn.completion_tokens,
                time.monotonic() - started,
                endpoint,
                turn.finish_reason,
            )
            if turn.fault is not None:  # counted here only: the reset-able stats and the metric
                self.stats.faults[turn.fault.type.value] += 1
                metrics.fault(turn.fault.type.value)
        if self.json_log:
            line: dict[str, Any] = {
                "request_id": request_id.decode("latin-1"),
                "instance": self.engine.instance_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
            }
            if turn is not None and turn.model:
                line |= {
                    "model": turn.model,
                    "prompt_tokens": turn.prompt_tokens,
                    "completion_tokens": turn.completion_tokens,
                    "ttft_ms": round((turn.queued_s + turn.plan.prefill) * 1000, 2),
                    "fault": turn.fault.type.value if turn.fault else None,
                    "key": mask(turn.key.key) if turn.key else None,
                }
            access_log.info(orjson.dumps(line).decode())

    def _as_api_error(self, exc: Exception, scope: Scope) -> APIError:
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, BodyTooLarge):
            return body_too_large(self.max_body)
        method, path = scope["method"], scope["path"]
        if isinstance(exc, HTTPException):
            status, headers = exc.status_code, dict(exc.headers or {})
            if status == 404:
                return APIError(404, f"Invalid URL ({method} {path})", kind=Kind.NOT_FOUND, headers=headers)
            if status == 405:
                message = f"Method {method} is not allowed for {path}."
                return APIError(405, message, kind=Kind.NOT_ALLOWED, headers=headers)
            return APIError(status, str(exc.detail), headers=headers)
        log.error("unhandled error on %s %s", method, path, exc_info=exc)
        return APIError(500, kind=Kind.INTERNAL)


async def send_error(error: APIError, send: Send, wire: Wire | None = None, request_id: bytes = b"") -> None:
    """The error in the envelope of the surface that owns the route (OpenAI's by default)."""
    status, body, headers = (wire or OPENAI).render_error(error, request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
