"""OpenAI's wire for errors and limits: its envelope ``{"error": {message, type, param, code}}``, its
wording of every neutral error kind, ``x-ratelimit-*`` and ``retry-after(-ms)`` headers, and the
corrupt event of the malformed fault. The default wire of every route without its own."""

from __future__ import annotations

import math
from typing import Any

import orjson

from llmsim.errors import APIError, Kind, shorten
from llmsim.limits import LimitState, format_duration

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"

# A chat.completion.chunk cut off mid-JSON, without its blank-line terminator: what a client sees
# when a proxy truncates an event.
MALFORMED_EVENT = b'data: {"id":"chatcmpl-llmsim","object":"chat.completion.chunk","choices":[{"ind\n\n'

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and "
    "password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
INCORRECT_KEY = (
    "Incorrect API key provided: {masked}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)
_LEARN_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."
_SERVER = "server_error"


def retry_headers(seconds: float | None) -> Headers:
    """``retry-after`` (whole seconds, rounded up, as HTTP has it) and the exact ``retry-after-ms``
    that OpenAI's SDK reads first; none for 0 or None."""
    if not seconds or seconds <= 0:
        return []
    return [
        (b"retry-after", b"%d" % max(1, math.ceil(seconds))),
        (b"retry-after-ms", b"%d" % max(1, math.ceil(seconds * 1000))),
    ]


def limit_headers(state: LimitState) -> Headers:
    """OpenAI's ``x-ratelimit-*``: remaining rounded down, reset as Go durations."""
    headers = []
    if state.limit_requests is not None:
        headers += [
            (b"x-ratelimit-limit-requests", b"%d" % state.limit_requests),
            (b"x-ratelimit-remaining-requests", b"%d" % state.remaining_requests),
            (b"x-ratelimit-reset-requests", format_duration(state.reset_requests).encode()),
        ]
    if state.limit_tokens is not None:
        headers += [
            (b"x-ratelimit-limit-tokens", b"%d" % state.limit_tokens),
            (b"x-ratelimit-remaining-tokens", b"%d" % state.remaining_tokens),
            (b"x-ratelimit-reset-tokens", format_duration(state.reset_tokens).encode()),
        ]
    return headers


def _rate_limited(data: dict[str, Any], wait: float | None) -> str:
    model, org = data.get("model", "gpt-4o"), data.get("org") or "org-llmsim"
    name = "tokens per min (TPM)" if data.get("bucket") == "tokens" else "requests per min (RPM)"
    if wait is None:  # larger than the limit: it never fits
        return (
            f"Request too large for {model} in organization {org} on {name}: Limit {data['cap']}, "
            f"Requested {data['requested']}. The input or output tokens must be reduced in order to run "
            f"successfully. {_LEARN_MORE}"
        )
    return (
        f"Rate limit reached for {model} in organization {org} on {name}: Limit {data['cap']}, "
        f"Used {data['used']}, Requested {data['requested']}. Please try again in {format_duration(wait)}. "
        f"{_LEARN_MORE}"
    )


def word(error: APIError) -> tuple[str, str, str | None, str | None]:
    """(message, type, param, code) of ``error`` as OpenAI words it."""
    kind, data = error.kind, error.data
    if error.message:
        fallback = _SERVER if error.status >= 500 else "requests" if error.status == 429 else None
        return error.message, error.type or fallback or "invalid_request_error", error.param, error.code
    if kind is Kind.AUTH:
        key = data.get("key")
        if key is None:
            return MISSING_KEY, "invalid_request_error", None, None  # code null, as OpenAI has it
        return INCORRECT_KEY.format(masked=key), "invalid_request_error", None, "invalid_api_key"
    if kind is Kind.RATE_LIMITED:
        wait = error.retry_after if data.get("fits", True) else None
        return _rate_limited(data, wait), data.get("bucket", "requests"), None, "rate_limit_exceeded"
    if kind is Kind.QUEUE_FULL:
        return (
            "The server is handling too many requests right now (queue full). Please retry after a short "
            "wait.",
            "requests",
            None,
            "queue_full",
        )
    if kind is Kind.OVERLOADED:
        return "The engine is currently overloaded, please try again later.", _SERVER, None, data.get("code")
    if kind is Kind.SERVER_ERROR:
        return "The server had an error while processing your request. Sorry about that!", _SERVER, None, None
    if kind is Kind.BAD_GATEWAY:
        return "Bad gateway.", _SERVER, None, None
    if kind is Kind.TIMEOUT:
        return "Request timed out.", _SERVER, None, "timeout"
    if kind is Kind.SHUTTING_DOWN:
        return "The server is shutting down.", _SERVER, None, "shutting_down"
    if kind is Kind.INTERNAL:
        return "The server had an error while processing your request.", _SERVER, None, "internal_error"
    if kind is Kind.CONTEXT_LENGTH:
        window = data["window"]
        return (
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{max(data.get('tokens', 0), window + 1)} tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "messages",
            "context_length_exceeded",
        )
    if kind is Kind.TOO_LARGE:
        return (
            f"Request body too large: the limit is {data['limit']} bytes.",
            "invalid_request_error",
            None,
            "request_too_large",
        )
    if kind is Kind.NOT_FOUND and "model" in data:
        message = f"The model `{shorten(data['model'])}` does not exist or you do not have access to it."
        return message, "invalid_request_error", None, "model_not_found"
    if data.get("reason") == "json":
        return INVALID_JSON, "invalid_request_error", None, None
    return "Invalid request.", "invalid_request_error", error.param, error.code


def error_body(error: APIError) -> bytes:
    message, kind, param, code = word(error)
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_headers(error: APIError) -> Headers:
    """Rate-limit and retry headers, then the error's own extra headers."""
    headers = limit_headers(error.limit) if error.limit is not None else []
    headers += retry_headers(error.retry_after)
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    return headers


class OpenAIWire:
    request_id_header: bytes | None = None
    malformed_event = MALFORMED_EVENT
    cut_event: bytes | None = None

    @staticmethod
    def render_error(error: APIError, request_id: bytes) -> tuple[int, bytes, Headers]:
        body = error_body(error)
        headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(body))]
        return error.status, body, headers + error_headers(error)

    limit_headers = staticmethod(limit_headers)


OPENAI = OpenAIWire()
