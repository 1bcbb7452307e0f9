"""Floors: the least a Python server on the same uvicorn can do for the same bytes on the wire.

``plain``      bare ASGI callable, no framework: reads the request, answers a fixed chat.completion.
``streaming``  bare Starlette: StreamingResponse of an async generator of the same 50 SSE events
               llmsim sends for a 47-token answer (role chunk, 47 content chunks, finish, [DONE]).
``sse``        the same 50 events through sse-starlette's EventSourceResponse (reference column).
``streaming_messages``  ``streaming`` with the route ``/v1/messages`` added, answering the 53 named
               events of Anthropic's Messages stream for the same 47 tokens (message_start,
               content_block_start, ping, 47 content_block_delta, content_block_stop, message_delta,
               message_stop): a reference row, to show what that shape alone costs the floor; the
               Anthropic llmsim rows are held to the same floors as their OpenAI twins.
``mixed``      bare ASGI for the realistic mix: reads the body and answers the shape it asks for,
               ``plain``'s chat.completion or, for ``"stream": true``, the 50 SSE events written one
               by one (as llmsim writes them); nothing else of the body is looked at.

Every body is built once at import; the floors pay only for HTTP and the framework.
Serve with ``python -m uvicorn floors:plain --app-dir benchmarks`` (see bench_core.py).
"""

from __future__ import annotations

import json

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

MODEL = "gpt-4o"
INSTANCE = "floor:0"
# Keep in step with chat.lua: llmsim in echo mode answers 'You said: "<last user message>"'.
USER_TEXT = (
    "I'm planning a three-day trip to Lisbon in early spring. Could you suggest an itinerary "
    "that balances museums, food and a day trip outside the city, and tell me roughly what "
    "public transport passes I should buy?"
)
CONTENT_TOKENS = 47  # + role chunk + finish chunk + [DONE] = 50 SSE events
STREAM_EVENTS = CONTENT_TOKENS + 3

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco"
).split()


def _dumps(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"))


COMPLETION = _dumps(
    {
        "id": "chatcmpl-" + "F" * 29,
        "object": "chat.completion",
        "created": 1764115200,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": f'You said: "{USER_TEXT}"',
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 70,
            "completion_tokens": 50,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": INSTANCE,
    }
).encode()


def _chunk(delta: dict, finish: str | None = None) -> str:
    return _dumps(
        {
            "id": "chatcmpl-" + "F" * 29,
            "object": "chat.completion.chunk",
            "created": 1764115200,
            "model": MODEL,
            "service_tier": "default",
            "system_fingerprint": INSTANCE,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
    )


# The data of each event, then the events as bytes.
STREAM_DATA = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    *(_chunk({"content": ("" if i == 0 else " ") + _LOREM[i % len(_LOREM)]}) for i in range(CONTENT_TOKENS)),
    _chunk({}, "stop"),
    "[DONE]",
]
STREAM_BYTES = [f"data: {data}\n\n".encode() for data in STREAM_DATA]
assert len(STREAM_BYTES) == STREAM_EVENTS

# Anthropic's Messages stream for the same 47 tokens, shaped as llmsim sends it (named events).
ANTHROPIC_MODEL = "claude-sonnet-4-5"
ANTHROPIC_STREAM_EVENTS = CONTENT_TOKENS + 6  # 3 before the deltas, 3 after


def _named(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {_dumps(payload)}\n\n".encode()


_MESSAGE = {
    "id": "msg_01" + "F" * 22,
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {
        "input_tokens": 73,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
        "service_tier": "standard",
    },
    "llmsim_instance": INSTANCE,
}
ANTHROPIC_STREAM_BYTES = [
    _named("message_start", {"type": "message_start", "message": _MESSAGE}),
    _named(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    _named("ping", {"type": "ping"}),
    *(
        _named(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": ("" if i == 0 else " ") + _LOREM[i % len(_LOREM)]},
            },
        )
        for i in range(CONTENT_TOKENS)
    ),
    _named("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _named(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": CONTENT_TOKENS},
        },
    ),
    _named("message_stop", {"type": "message_stop"}),
]
assert len(ANTHROPIC_STREAM_BYTES) == ANTHROPIC_STREAM_EVENTS

_JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(COMPLETION)).encode())]
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def plain(scope, receive, send) -> None:
    """A fixed chat.completion for every HTTP request, after reading the request body (and
    ignoring it: identical and unique bodies get the same answer at the same cost)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": COMPLETION})


_SSE_RAW_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
# How the mix's corpus (bench_core.py, json.dumps defaults) writes a request for a stream.
STREAM_MARKER = b'"stream": true'


async def mixed(scope, receive, send) -> None:
    """``plain``, except that a body asking for a stream gets the 50 SSE events, one write each."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "http":
        return
    parts = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    if STREAM_MARKER not in b"".join(parts):
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": COMPLETION})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_RAW_HEADERS})
    for event in STREAM_BYTES:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _ok(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def _events():
    for event in STREAM_BYTES:
        yield event


async def _stream(request: Request) -> Response:
    await request.body()
    return StreamingResponse(_events(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _anthropic_events():
    for event in ANTHROPIC_STREAM_BYTES:
        yield event


async def _stream_messages(request: Request) -> Response:
    await request.body()
    return StreamingResponse(_anthropic_events(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _sse_events():
    for data in STREAM_DATA:
        yield {"data": data}


async def _sse(request: Request) -> Response:
    await request.body()
    return EventSourceResponse(_sse_events(), sep="\n")


streaming = Starlette(routes=[Route("/", _ok), Route("/v1/chat/completions", _stream, methods=["POST"])])
sse = Starlette(routes=[Route("/", _ok), Route("/v1/chat/completions", _sse, methods=["POST"])])
streaming_messages = Starlette(
    routes=[
        Route("/", _ok),
        Route("/v1/chat/completions", _stream, methods=["POST"]),
        Route("/v1/messages", _stream_messages, methods=["POST"]),
    ]
)
