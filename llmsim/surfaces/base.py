"""What the shared layers ask of a surface when they answer for it: the wire's own error envelope,
rate-limit headers and mid-stream fault events.

The Pipeline and the Engine know no provider. A surface's endpoint carries its wire object as
``endpoint.surface``; the Pipeline finds it by route path (so even a 413 decided before the route
runs is rendered right) and puts it in ``scope["llmsim.surface"]``, where a handler may also set one
(``GET /v1/models`` with ``anthropic-version``). Without one, OpenAI's wire (:data:`OPENAI`) is used.
"""

from __future__ import annotations

import random
import string
from typing import TYPE_CHECKING, Protocol

from starlette.types import Receive

from llmsim.errors import APIError
from llmsim.surfaces.openai_wire import JSON, OPENAI, Headers

if TYPE_CHECKING:
    from llmsim.limits import LimitState

__all__ = ["JSON", "OPENAI", "SSE_HEADERS", "Headers", "Wire", "random_id", "read_body", "wire_of"]

# Every event stream's headers, whichever provider's events it carries.
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tells nginx not to buffer the stream
]

_ALPHABET = string.ascii_letters + string.digits
_ID_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))


def random_id(prefix: str, length: int) -> str:
    """``prefix`` and ``length`` random letters and digits: one C call, not a Python loop (every
    response mints a few). The prefix and the length are the provider's (``chatcmpl-`` + 29)."""
    return prefix + random.randbytes(length).translate(_ID_TABLE).decode()


class Wire(Protocol):
    # A header that carries the request ID besides x-request-id (Anthropic's ``request-id``), or None.
    request_id_header: bytes | None
    # One corrupt SSE event, for the malformed fault (the stream carries on after it).
    malformed_event: bytes
    # Sent just before a disconnect fault drops the connection (Anthropic's ``event: error``), or None.
    cut_event: bytes | None

    def render_error(self, error: APIError, request_id: bytes) -> tuple[int, bytes, Headers]:
        """Status, body and headers (content-type and length included) of an error response: the
        provider's status for the error's kind, its envelope and words, its rate-limit and retry
        headers (from ``error.limit`` and ``error.retry_after``)."""
        ...

    def limit_headers(self, state: LimitState) -> Headers:
        """The rate-limit headers of a request that passed the limiter."""
        ...


def wire_of(scope: dict) -> Wire:
    return scope.get("llmsim.surface") or OPENAI


async def read_body(receive: Receive) -> bytes:
    """A request's whole body (the Pipeline has bounded its size)."""
    parts = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)
