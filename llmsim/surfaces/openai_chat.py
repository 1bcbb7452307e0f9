"""OpenAI ``/v1/chat/completions``: wire format in, neutral request out, and back again."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError
from starlette.types import Scope

from llmsim import schema_values
from llmsim.engine import Engine, Turn
from llmsim.errors import APIError, invalid_function_schema, invalid_response_schema, model_not_found
from llmsim.generation import Choice, Finish, Generation, GenerationRequest, PromptMessage, ToolCall, ToolSpec
from llmsim.surfaces.base import SSE_HEADERS, random_id
from llmsim.surfaces.endpoint import Generate, Reply
from llmsim.surfaces.openai_fields import Int, Model, StreamOptions, Text, check_stream_options
from llmsim.surfaces.routes import RawRoute, post
from llmsim.surfaces.validation import check_complexity, to_api_error

# Bounds on the shape of a prompt, so that validating the largest body stays well under 100 ms
# (pydantic spends a few microseconds an item): far above what real requests carry (OpenAI takes
# at most 500 images a request; 128 tools and 128 tool calls a message are its own limits).
MAX_MESSAGES = 4096
MAX_PARTS = 1024  # content parts of one message
MAX_PROMPT_PARTS = 5_000  # content parts of all messages together
MAX_TOOLS = 128


def _spend_parts(parts: list[Any], info: ValidationInfo) -> list[Any]:
    """Count a message's parts against the request's budget (``context``), failing at the first
    message past it rather than after validating them all."""
    if info.context is not None:
        left = info.context["parts"] = info.context["parts"] - len(parts)
        if left < 0:
            raise PydanticCustomError(
                "too_many_parts",
                "too many content parts: at most {limit} across all messages",
                {"limit": MAX_PROMPT_PARTS},
            )
    return parts


def Parts(part: Any) -> Any:  # noqa: N802 - a type
    return Annotated[list[part], Field(max_length=MAX_PARTS, fail_fast=True), AfterValidator(_spend_parts)]


class TextPart(Model):
    type: Literal["text"]
    text: Text


class RefusalPart(Model):
    type: Literal["refusal"]
    refusal: str


class ImageURL(Model):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Model):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(Model):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(Model):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(Model):
    type: Literal["file"]
    file: dict[str, Any]


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(Model):
    name: str
    arguments: str


class MessageToolCall(Model):
    id: str
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(Model):
    role: Literal["system"]
    content: Text | Parts(TextPart)
    name: str | None = None


class DeveloperMessage(Model):
    role: Literal["developer"]
    content: Text | Parts(TextPart)
    name: str | None = None


class UserMessage(Model):
    role: Literal["user"]
    content: Text | Parts(UserPart)
    name: str | None = None


class AssistantMessage(Model):
    role: Literal["assistant"]
    content: Text | Parts(AssistantPart) | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: Annotated[list[MessageToolCall], Field(max_length=128)] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(Model):
    role: Literal["tool"]
    content: Text | Parts(TextPart)
    tool_call_id: str


class FunctionMessage(Model):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(Model):
    name: str = Field(max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Model):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Model):
    name: str


class NamedToolChoice(Model):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(Model):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(Model):
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES, fail_fast=True)
    n: Int | None = Field(None, ge=1, le=128)
    max_tokens: Int | None = Field(None, ge=1)
    max_completion_tokens: Int | None = Field(None, ge=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: (
        Annotated[dict[str, Annotated[Int, Field(ge=-100, le=100)]], Field(max_length=1024)] | None
    ) = None
    logprobs: bool | None = None
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    user: str | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    store: bool | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    service_tier: str | None = None
    # OpenAI's values; a model that does not reason ignores it (llmsim.generation.REASONING_EFFORTS).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    modalities: list[str] | None = None


def _prompt_message(message: Any) -> PromptMessage:
    texts: list[str] = []
    images = 0
    body = message.content
    if isinstance(body, str):
        texts.append(body)
    elif body:
        for part in body:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, RefusalPart):
                texts.append(part.refusal)
            elif isinstance(part, ImagePart):
                images += 1
    # Read optional fields from __dict__: a missing attribute on a pydantic model goes through
    # BaseModel.__getattr__, which builds and raises an AttributeError (slow on the hot path).
    fields = message.__dict__
    for call in fields.get("tool_calls") or ():
        texts += (call.function.name, call.function.arguments)
    return PromptMessage(message.role, tuple(texts), fields.get("name"), images)


# Bodies up to this size have their validated form remembered (the last 256): a load test or a
# gateway's retry sends the same bytes again, and validation is a pure function of the bytes, as
# a token count is of the text. Every new body is still validated in full; errors are never cached.
CACHED_BODY_BYTES = 8 * 1024


def parse(raw: bytes, models: frozenset[str]) -> tuple[ChatCompletionRequest, GenerationRequest]:
    if len(raw) > CACHED_BODY_BYTES:
        return _parse(raw, models)
    return _parse_cached(raw, models)  # shared: the engine changes a copy, never the request


def _parse(raw: bytes, models: frozenset[str]) -> tuple[ChatCompletionRequest, GenerationRequest]:
    check_complexity(raw)
    try:
        body = ChatCompletionRequest.model_validate_json(raw, context={"parts": MAX_PROMPT_PARTS})
    except ValidationError as exc:
        raise to_api_error(exc, raw) from None
    check_stream_options(body.stream_options, body.stream)
    if body.model not in models:
        raise model_not_found(body.model)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(s for s in body.stop or () if s)
    neutral = GenerationRequest(
        model=body.model,
        messages=[_prompt_message(m) for m in body.messages],
        n=body.n or 1,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        seed=body.seed,
        stream=bool(body.stream),
        reasoning_effort=body.reasoning_effort,
    )
    if body.tools or body.tool_choice is not None:
        neutral.tools, neutral.tool_choice = _tools(body)
        neutral.parallel_tool_calls = body.parallel_tool_calls is not False
    if body.response_format is not None:
        _response_format(body.response_format, neutral)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(
            400,
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
        )
    return body, neutral


_parse_cached = lru_cache(maxsize=256)(_parse)


def _tools(body: ChatCompletionRequest) -> tuple[tuple[ToolSpec, ...], str]:
    tools = tuple(ToolSpec(t.function.name, t.function.parameters or {}) for t in body.tools or ())
    for i, tool in enumerate(tools):
        try:
            schema_values.check(tool.parameters)
        except schema_values.SchemaError as exc:
            raise invalid_function_schema(tool.name, i, exc) from None
    choice = body.tool_choice
    if choice is None:
        return tools, "auto" if tools else "none"
    if choice != "none" and not tools:
        raise APIError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            "invalid_value",
        )
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in {t.name for t in tools}:
            raise APIError(
                400,
                f"Invalid value for 'tool_choice': function '{name}' is not one of the 'tools'.",
                "tool_choice",
                "invalid_value",
            )
        return tools, f"function:{name}"
    return tools, choice


def _response_format(fmt: ResponseFormat, neutral: GenerationRequest) -> None:
    if fmt.type == "json_object":
        neutral.json_object = True
    elif fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise APIError(
                400,
                "Missing required parameter: 'response_format.json_schema'.",
                "response_format.json_schema",
                "missing_required_parameter",
            )
        schema = fmt.json_schema.schema_ or {}
        try:
            schema_values.check(schema)
        except schema_values.SchemaError as exc:
            raise invalid_response_schema(fmt.json_schema.name, exc) from None
        neutral.json_schema = schema


def completion_id() -> str:
    return random_id("chatcmpl-", 29)


def _usage(generation: Generation) -> dict[str, Any]:
    """Usage as the Generation reports it: cached prompt tokens and reasoning tokens (part of
    completion_tokens) in the details, as OpenAI bills them."""
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": generation.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": generation.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# Alternatives offered in top_logprobs, always less likely than the token that was "chosen".
_ALTERNATIVES = (
    " the",
    ",",
    " and",
    ".",
    " a",
    " of",
    " to",
    " in",
    " is",
    " that",
    " it",
    " for",
    " on",
    " with",
    " as",
    " was",
    " at",
    " by",
    " this",
    " be",
)


def _logprob(piece: str, top: int) -> dict[str, Any]:
    """A plausible, deterministic log probability for a token, in OpenAI's shape."""
    logprob = -(zlib.crc32(piece.encode()) % 700) / 1000
    entry: dict[str, Any] = {"token": piece, "logprob": logprob, "bytes": list(piece.encode())}
    alternatives = [a for a in _ALTERNATIVES if a != piece][: max(0, top - 1)]
    entry["top_logprobs"] = (
        [{"token": piece, "logprob": logprob, "bytes": entry["bytes"]}]
        + [
            {"token": alt, "logprob": round(logprob - 1.5 - 0.7 * k, 4), "bytes": list(alt.encode())}
            for k, alt in enumerate(alternatives)
        ]
        if top
        else []
    )
    return entry


# OpenAI's names for the engine's finish reasons (a stop sequence is "stop" too).
FINISH_REASONS = {Finish.STOP: "stop", Finish.LENGTH: "length", Finish.TOOL_CALL: "tool_calls"}


def _tool_call(call: ToolCall, index: int, arguments: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": "call_" + call.key,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text if choice.pieces or not choice.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {k: v for k, v in _tool_call(call, i, call.json).items() if k != "index"}
            for i, call in enumerate(choice.tool_calls)
        ]
    return message


def render(generation: Generation, model: str, instance: str, top_logprobs: int | None = None) -> bytes:
    """The non-streamed body; ``top_logprobs`` None means the request asked for no logprobs."""
    return orjson.dumps(
        {
            "id": completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": choice.index,
                    "message": _message(choice),
                    "logprobs": None
                    if top_logprobs is None
                    else {"content": [_logprob(p, top_logprobs) for p in choice.pieces], "refusal": None},
                    "finish_reason": FINISH_REASONS[choice.finish_reason],
                }
                for choice in generation.choices
            ],
            "usage": _usage(generation),
            "service_tier": "default",
            "system_fingerprint": instance,
        }
    )


def _steps(choice: Choice, top_logprobs: int | None) -> Iterator[tuple[int, dict[str, Any], Any]]:
    """(generation step, delta, logprobs) of one choice's chunks after the role chunk."""
    position = 0
    for piece in choice.pieces:
        logprobs = (
            None if top_logprobs is None else {"content": [_logprob(piece, top_logprobs)], "refusal": None}
        )
        yield position, {"content": piece}, logprobs
        position += 1
    for index, call in enumerate(choice.tool_calls):
        if index:  # the first call is announced with the role; later ones when they start
            yield position, {"tool_calls": [_tool_call(call, index, "")]}, None
        for piece in call.pieces:
            yield position, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None
            position += 1


def render_stream(
    generation: Generation, model: str, instance: str, include_usage: bool, top_logprobs: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """SSE events as OpenAI sends them: role first, one token per chunk (tool-call arguments in
    pieces after the call's id and name), interleaved across choices, a finish chunk per
    choice, the optional usage chunk, then ``[DONE]``.

    Each event comes with the generation step it belongs to, so the shared latency model can
    pace it; the surface knows nothing of time.
    """
    envelope = orjson.dumps(
        {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": instance,
            "choices": [],
            **({"usage": None} if include_usage else {}),
        }
    )
    # Every chunk shares the envelope; only the choices array differs, so splice it in.
    head, tail = envelope.split(b'"choices":[]', 1)
    head = b"data: " + head + b'"choices":['
    tail = b"]" + tail + b"\n\n"
    dumps = orjson.dumps

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return head + dumps(choice) + tail

    choices = generation.choices
    for choice in choices:
        role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if choice.tool_calls and not choice.pieces:
            role = {
                "role": "assistant",
                "content": None,
                "tool_calls": [_tool_call(choice.tool_calls[0], 0, "")],
                "refusal": None,
            }
        yield 0, chunk(choice.index, role)
    if len(choices) == 1:
        index = choices[0].index
        for position, delta, logprobs in _steps(choices[0], top_logprobs):
            yield position, chunk(index, delta, None, logprobs)
    else:
        steps = [(p, c.index, d, lp) for c in choices for p, d, lp in _steps(c, top_logprobs)]
        steps.sort(key=lambda step: (step[0], step[1]))  # interleaved, as OpenAI streams n > 1
        for position, index, delta, logprobs in steps:
            yield position, chunk(index, delta, None, logprobs)
    last = max(0, generation.longest - 1)
    for choice in choices:
        yield last, chunk(choice.index, {}, FINISH_REASONS[choice.finish_reason])
    if include_usage:
        usage = envelope.replace(b'"usage":null', b'"usage":' + dumps(_usage(generation)))
        yield last, b"data: " + usage + b"\n\n"
    yield last, b"data: [DONE]\n\n"


class ChatSurface:
    """OpenAI's chat completions for the shared endpoint (llmsim.surfaces.endpoint.Generate)."""

    wire = None  # OpenAI's envelope and headers are the default

    def check(self, scope: Scope) -> None:
        pass

    parse = staticmethod(parse)

    def reply(self, body: ChatCompletionRequest, generation: Generation, turn: Turn, instance: str) -> Reply:
        top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = render_stream(generation, body.model, instance, include_usage, top_logprobs)
            return Reply(events=events, headers=SSE_HEADERS)
        return Reply(render(generation, body.model, instance, top_logprobs))


CHAT = ChatSurface()


def routes(engine: Engine) -> list[RawRoute]:
    return [
        post(
            "/v1/chat/completions",
            Generate(engine, CHAT),
            ChatCompletionRequest,
            tag="OpenAI",
            summary="Create a chat completion",
            operation_id="create_chat_completion",
            description="OpenAI's chat completions; the answer's text, timing, faults and limits "
            "follow the instance's settings (`/llmsim/config`).",
            answer='A `chat.completion`; with `"stream": true` an event stream of '
            "`chat.completion.chunk` events ending in `data: [DONE]`.",
            statuses=(400, 401, 404, 413, 429, 500, 503, 504),
        )
    ]
