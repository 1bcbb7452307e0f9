"""Errors as neutral kinds with data: the core says *what* happened, each surface's wire says it in
its provider's words.

A surface's own bad-input errors carry their wording in ``message`` (and ``param``/``code``).
Errors the shared stages raise (auth, faults, limits, the queue, timeouts, shutdown) carry a
:class:`Kind`, the numbers a provider quotes (``data``), the limiter's buckets (``limit``) and how
long to wait (``retry_after``); the route's wire (llmsim.surfaces.base.Wire) picks the status its
provider uses, the envelope, the wording and the rate-limit and retry headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmsim.limits import LimitState


class Kind(StrEnum):
    INVALID = "invalid"  # bad input: ``param`` names it
    AUTH = "auth"  # no key, or a wrong one (data: key, the masked key; absent when none was sent)
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"  # data: model, when a model is what is missing
    NOT_ALLOWED = "not_allowed"  # the method, on a path that exists
    TOO_LARGE = "too_large"  # the request body (data: limit, in bytes)
    CONTEXT_LENGTH = "context_length"  # data: window, tokens
    RATE_LIMITED = "rate_limited"  # a limiter's bucket (data: bucket, model, org, cap, used, requested)
    QUEUE_FULL = "queue_full"  # the waiting room is full (429)
    OVERLOADED = "overloaded"  # 503 from OpenAI, 529 from Anthropic
    SERVER_ERROR = "server_error"
    BAD_GATEWAY = "bad_gateway"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"  # a bug in llmsim: logged, answered 500


@dataclass
class APIError(Exception):
    status: int
    message: str = ""  # the surface's own words; empty: the wire words ``kind`` from ``data``
    param: str | None = None
    code: str | None = None
    type: str | None = None  # a scripted error's own type, kept as given
    headers: dict[str, str] = field(default_factory=dict)  # extra headers (Allow, a script's)
    kind: Kind = Kind.INVALID
    data: dict[str, Any] = field(default_factory=dict)
    limit: LimitState | None = None  # the limiter's buckets, for rate-limit headers
    retry_after: float | None = None  # seconds; the wire renders its own retry headers (0: none)


def shorten(value: object, limit: int = 256) -> str:
    """A client's value as quoted in an error: never the whole of a megabyte string."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def invalid_json() -> APIError:
    return APIError(400, kind=Kind.INVALID, data={"reason": "json"})


def model_not_found(model: str) -> APIError:
    return APIError(404, kind=Kind.NOT_FOUND, data={"model": model})


def body_too_large(limit: int) -> APIError:
    return APIError(413, kind=Kind.TOO_LARGE, data={"limit": limit})


def invalid_function_schema(name: str, index: int, detail: object) -> APIError:
    """A tool's ``parameters`` schema that llmsim refuses (malformed, or past a bound)."""
    return APIError(
        400,
        f"Invalid schema for function '{shorten(name, 64)}': {detail}",
        f"tools[{index}].function.parameters",
        "invalid_function_parameters",
        data={"tool": index, "detail": str(detail)},
    )


def invalid_response_schema(name: str, detail: object) -> APIError:
    """A ``response_format`` JSON schema that llmsim refuses."""
    named = f" '{shorten(name, 64)}'" if name else ""
    return APIError(
        400, f"Invalid schema for response_format{named}: {detail}", "response_format", "invalid_value"
    )
