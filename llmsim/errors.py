"""Provider error envelopes.

Every failure a client can cause is raised as :class:`APIError`; :meth:`APIError.body` is OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, so SDKs map it to their usual exceptions.
Other surfaces render the same error in their own envelope (llmsim.surfaces.base.Wire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from llmsim.limits import LimitState

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "requests",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


@dataclass
class APIError(Exception):
    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Neutral data for surfaces that word and shape errors their own way (llmsim.surfaces.base):
    # ``kind`` names what happened (a fault type, "rate_limited"), ``limit`` the limiter's buckets.
    kind: str | None = None
    limit: LimitState | None = None

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.type or STATUS_TYPES.get(self.status, "invalid_request_error"),
            "param": self.param,
            "code": self.code,
        }
        return orjson.dumps({"error": error})


def shorten(value: object, limit: int = 256) -> str:
    """A client's value as quoted in an error: never the whole of a megabyte string."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def invalid_json() -> APIError:
    return APIError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON.)",
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{shorten(model)}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def body_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request body too large: the limit is {limit} bytes.",
        code="request_too_large",
    )


def invalid_function_schema(name: str, index: int, detail: object) -> APIError:
    """A tool's ``parameters`` schema that llmsim refuses (malformed, or past a bound)."""
    return APIError(
        400,
        f"Invalid schema for function '{shorten(name, 64)}': {detail}",
        f"tools[{index}].function.parameters",
        "invalid_function_parameters",
    )


def invalid_response_schema(name: str, detail: object) -> APIError:
    """A ``response_format`` JSON schema that llmsim refuses."""
    named = f" '{shorten(name, 64)}'" if name else ""
    return APIError(
        400, f"Invalid schema for response_format{named}: {detail}", "response_format", "invalid_value"
    )
