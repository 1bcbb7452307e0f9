"""Anthropic ``/v1/messages`` (and ``/v1/messages/count_tokens``): wire format in, neutral request
out, and back again, in Anthropic's envelope, headers and named SSE events.

- The instance ID is in the ``x-llmsim-instance`` header (the Pipeline's), and in the body as the
  top-level ``llmsim_instance`` field of the message (and of ``message_start``'s message): the
  SDKs keep unknown fields, and it survives a gateway that drops headers.
- Anthropic's tokenizer is not public: prompts are counted with the shipped encodings
  (llmsim.tokens), so counts are close to, not equal to, Anthropic's.
- Prompt caching is simulated per instance: the prefix (tools, system, messages) up to each block
  marked ``cache_control`` is remembered (LRU, :data:`CACHE_ENTRIES`); a later request with the
  same prefix reads it (``cache_read_input_tokens``), else writes it
  (``cache_creation_input_tokens``). No minimum length and no TTL expiry are simulated.
- Extended thinking adds a thinking block (with a ``signature``) before the answer; its tokens
  count as output tokens and are sent with the first token.
- Mid-stream faults: ``malformed`` sends one truncated event and carries on; ``disconnect`` sends
  ``event: error`` (``overloaded_error``, as Anthropic ends a failing stream) and then drops the
  connection.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from llmsim import schema_values, tokens
from llmsim.content import lorem
from llmsim.engine import Engine, Turn
from llmsim.errors import APIError, Kind, shorten
from llmsim.generation import (
    Choice,
    Finish,
    Generation,
    GenerationRequest,
    PromptMessage,
    ToolCall,
    ToolSpec,
    count_prompt,
)
from llmsim.limits import LimitState
from llmsim.surfaces.base import JSON, SSE_HEADERS, Headers, random_id, read_body
from llmsim.surfaces.endpoint import PARSE_IN_THREAD_BYTES, Generate, Reply
from llmsim.surfaces.routes import JSON_ONLY, RawRoute, post
from llmsim.surfaces.validation import check_complexity
from llmsim.workers import in_thread

VERSION_HEADER = b"anthropic-version"
# The largest max_tokens accepted (Claude Opus 4's output limit); Anthropic's bound is per model.
MAX_OUTPUT_TOKENS = 128_000
MIN_THINKING_BUDGET = 1024
THINKING_TOKENS = 24  # tokens of a simulated thinking block (at most the budget)
CACHE_ENTRIES = 4096  # prompt-cache prefixes remembered per instance
MAX_STRING = 10 * 1024 * 1024
MAX_MESSAGES = 4096
MAX_BLOCKS = 1024
MAX_TOOLS = 128

# --- request models --------------------------------------------------------------------------


class _Model(BaseModel):
    # strict types; unknown fields ignored (the SDKs add new optional ones often).
    model_config = ConfigDict(strict=True, extra="ignore")


Text = Annotated[str, Field(max_length=MAX_STRING)]


class CacheControl(_Model):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Model):
    type: Literal["text"]
    text: Text
    cache_control: CacheControl | None = None
    citations: list[Any] | None = None


class Base64Source(_Model):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Model):
    type: Literal["url"]
    url: str


class ImageBlock(_Model):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class DocumentBlock(_Model):
    type: Literal["document"]
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None
    cache_control: CacheControl | None = None


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        Text
        | Annotated[
            list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]], Field(max_length=MAX_BLOCKS)
        ]
        | None
    ) = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ThinkingBlock(_Model):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"]
    data: str


UserBlock = Annotated[TextBlock | ImageBlock | DocumentBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]


class UserMessage(_Model):
    role: Literal["user"]
    content: Text | Annotated[list[UserBlock], Field(max_length=MAX_BLOCKS)]


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: Text | Annotated[list[AssistantBlock], Field(max_length=MAX_BLOCKS)]


Message = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class Tool(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoiceAuto(_Model):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Model):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Model):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Model):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingEnabled(_Model):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=MIN_THINKING_BUDGET)


class ThinkingDisabled(_Model):
    type: Literal["disabled"]


class Metadata(_Model):
    user_id: Annotated[str, Field(max_length=512)] | None = None


class _Prompt(_Model):
    model: str
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: Text | Annotated[list[TextBlock], Field(max_length=MAX_BLOCKS)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Annotated[ThinkingEnabled | ThinkingDisabled, Field(discriminator="type")] | None = None


class CountTokensRequest(_Prompt):
    pass


class MessagesRequest(_Prompt):
    max_tokens: int = Field(ge=1)
    stop_sequences: Annotated[list[str], Field(max_length=8192)] | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None


# --- validation errors, worded as Anthropic's (its API speaks pydantic too) ------------------


def invalid(message: str) -> APIError:
    return APIError(400, message)


def _location(body: Any, loc: tuple[int | str, ...], missing: bool) -> str:
    """The error's path in the body (``messages.0.content``), without pydantic's union tags."""
    steps: list[str] = []
    node = body
    for i, step in enumerate(loc):
        if (isinstance(node, dict) and isinstance(step, str) and step in node) or (
            isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        ):
            node = node[step]
        elif not (missing and i == len(loc) - 1):
            continue  # a union tag, not a step in the body
        steps.append(str(step))
    return ".".join(steps)


def _validation_error(exc: ValidationError, raw: bytes) -> APIError:
    errors = exc.errors(include_url=False)
    if errors[0]["type"] in ("json_invalid", "json_type"):
        return invalid("There was an issue with the body of your request: it is not valid JSON.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return invalid("There was an issue with the body of your request: it is not valid JSON.")
    if not isinstance(body, dict):
        return invalid("The request body must be a JSON object.")
    # Of a union's alternatives, the one that got deepest into the body is what the client meant.
    first = max(errors, key=lambda e: len(_location(body, e["loc"], e["type"] == "missing")))
    kind, ctx = first["type"], first.get("ctx", {})
    where = _location(body, first["loc"], kind == "missing")
    if kind == "union_tag_invalid":
        tags = str(ctx.get("expected_tags", "")).replace(", ", " or ")
        field = str(ctx.get("discriminator", "")).strip("'")
        where = f"{where}.{field}" if where else field
        message = f"Input should be {tags}"
    elif kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "")).strip("'")
        where = f"{where}.{field}" if where else field
        message = "Field required"
    else:
        message = shorten(first["msg"])
    return invalid(f"{where}: {message}" if where else message)


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A prompt-cache breakpoint: the prefix up to a ``cache_control`` block."""

    key: bytes
    tokens: int


@dataclass(slots=True)
class Parsed:
    body: MessagesRequest
    neutral: GenerationRequest
    thinking_budget: int | None
    breakpoints: tuple[Breakpoint, ...]


def _texts(block: Any) -> tuple[list[str], int]:
    """What a block bills as text, and its images."""
    kind = block.type
    if kind == "text":
        return [block.text], 0
    if kind in ("image", "document"):
        return [], 1
    if kind == "tool_use":
        return [block.name, orjson.dumps(block.input).decode()], 0
    if kind == "tool_result":
        content = block.content
        if content is None:
            return [], 0
        if isinstance(content, str):
            return [content], 0
        texts, images = [], 0
        for part in content:
            if part.type == "text":
                texts.append(part.text)
            else:
                images += 1
        return texts, images
    return [], 0  # thinking from earlier turns is not part of the context


def _check_messages(messages: Sequence[Any]) -> None:
    if messages[0].role != "user":
        raise invalid('messages: first message must use the "user" role')
    last = len(messages) - 1
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, str):
            if not content.strip() and not (i == last and message.role == "assistant" and not content):
                raise invalid(
                    f"messages.{i}: all messages must have non-empty content except for the optional "
                    "final assistant message"
                )
            continue
        if not content and not (i == last and message.role == "assistant"):
            raise invalid(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        for j, block in enumerate(content):
            if block.type == "text" and not block.text.strip():
                raise invalid(
                    f"messages.{i}.content.{j}.text: text content blocks must contain non-whitespace text"
                )
    # Every tool_result answers a tool_use of the message before it, and every tool_use is answered.
    for i, message in enumerate(messages):
        if isinstance(message.content, str):
            continue
        if message.role == "user":
            results = [b.tool_use_id for b in message.content if b.type == "tool_result"]
            if not results:
                continue
            previous = messages[i - 1] if i else None
            uses = (
                {b.id for b in previous.content if b.type == "tool_use"}
                if previous is not None
                and previous.role == "assistant"
                and not isinstance(previous.content, str)
                else set()
            )
            stray = [r for r in results if r not in uses]
            if stray:
                raise invalid(
                    f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{shorten(stray[0], 64)}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
        elif i < last:
            uses = [b.id for b in message.content if b.type == "tool_use"]
            following = messages[i + 1].content
            answered = (
                set()
                if isinstance(following, str)
                else {b.tool_use_id for b in following if b.type == "tool_result"}
            )
            missing = [u for u in uses if u not in answered]
            if missing:
                raise invalid(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {shorten(missing[0], 64)}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )


def _prompt(body: _Prompt) -> list[PromptMessage]:
    system_texts: list[str] = []
    if isinstance(body.system, str):
        system_texts.append(body.system)
    elif body.system:
        system_texts += [b.text for b in body.system]
    for tool in body.tools or ():  # tool definitions are part of the prompt, as Anthropic bills them
        system_texts.append(
            orjson.dumps(tool.model_dump(exclude_none=True, exclude={"cache_control"})).decode()
        )
    prompt = [PromptMessage("system", tuple(system_texts))] if system_texts else []
    for message in body.messages:
        if isinstance(message.content, str):
            prompt.append(PromptMessage(message.role, (message.content,)))
            continue
        texts: list[str] = []
        images = 0
        for block in message.content:
            more, pictures = _texts(block)
            texts += more
            images += pictures
        prompt.append(PromptMessage(message.role, tuple(texts), None, images))
    return prompt


def _tools(body: _Prompt) -> tuple[tuple[ToolSpec, ...], str, bool]:
    tools = tuple(ToolSpec(t.name, t.input_schema) for t in body.tools or ())
    for i, tool in enumerate(tools):
        if tool.parameters.get("type") != "object":
            raise invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        try:
            schema_values.check(tool.parameters)
        except schema_values.SchemaError as exc:
            raise invalid(f"tools.{i}.custom.input_schema: JSON schema is invalid: {exc}") from None
    choice = body.tool_choice
    if choice is None:
        return tools, "auto" if tools else "none", True
    parallel = not getattr(choice, "disable_parallel_tool_use", None)
    if choice.type == "none":
        return tools, "none", parallel
    if not tools:
        raise invalid("tool_choice: tool_choice may only be specified while providing tools.")
    if choice.type == "tool":
        if choice.name not in {t.name for t in tools}:
            raise invalid(
                f"tool_choice.name: Tool '{shorten(choice.name, 64)}' not found in the provided tools."
            )
        return tools, f"function:{choice.name}", parallel
    return tools, "required" if choice.type == "any" else "auto", parallel


def _breakpoints(body: _Prompt) -> tuple[Breakpoint, ...]:
    """The cache prefixes a request marks: hashes of tools, system and messages up to each
    ``cache_control`` block, in Anthropic's order, with their token counts."""
    tokenizer = tokens.for_model(body.model)
    digest = hashlib.blake2b(body.model.encode(), digest_size=16)
    counted = 0
    found: list[Breakpoint] = []

    def add(text: str, marked: bool) -> None:
        nonlocal counted
        data = text.encode()
        digest.update(b"%d:" % len(data) + data)
        counted += tokenizer.count(text)
        if marked:
            found.append(Breakpoint(digest.copy().digest(), counted))

    for tool in body.tools or ():
        add(
            orjson.dumps(tool.model_dump(exclude_none=True, exclude={"cache_control"})).decode(),
            bool(tool.cache_control),
        )
    if isinstance(body.system, str):
        add(body.system, False)
    for block in body.system or () if not isinstance(body.system, str) else ():
        add(block.text, block.cache_control is not None)
    for message in body.messages:
        add(f"\0{message.role}\0", False)
        if isinstance(message.content, str):
            add(message.content, False)
            continue
        for block in message.content:
            texts, images = _texts(block)
            add("\0".join(texts) + "\0image" * images, getattr(block, "cache_control", None) is not None)
    return tuple(found[-4:])  # at most four breakpoints count, as Anthropic allows


def _marked(raw: bytes) -> bool:
    return b'"cache_control"' in raw


def _load(raw: bytes, model: type[_Prompt]) -> Any:
    check_complexity(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc, raw) from None


def parse(raw: bytes, models: frozenset[str]) -> Parsed:
    return _parse(raw, models) if len(raw) > CACHED_BODY_BYTES else _parse_cached(raw, models)


CACHED_BODY_BYTES = 8 * 1024


def _parse(raw: bytes, models: frozenset[str]) -> Parsed:
    body: MessagesRequest = _load(raw, MessagesRequest)
    if body.model not in models:
        raise APIError(404, f"model: {shorten(body.model, 128)}", kind=Kind.NOT_FOUND)
    if body.max_tokens > MAX_OUTPUT_TOKENS:
        raise invalid(
            f"max_tokens: {body.max_tokens} > {MAX_OUTPUT_TOKENS}, which is the maximum allowed number of "
            f"output tokens for {shorten(body.model, 128)}"
        )
    _check_messages(body.messages)
    budget = None
    if isinstance(body.thinking, ThinkingEnabled):
        budget = body.thinking.budget_tokens
        if budget >= body.max_tokens:
            raise invalid(
                "max_tokens: `max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
            )
    neutral = GenerationRequest(
        model=body.model,
        messages=_prompt(body),
        max_tokens=body.max_tokens,
        stop=tuple(s for s in body.stop_sequences or () if s),
        stream=bool(body.stream),
        auto_prompt_cache=False,  # Anthropic caches only what cache_control marks (PromptCache below)
    )
    if body.tools or body.tool_choice is not None:
        neutral.tools, neutral.tool_choice, neutral.parallel_tool_calls = _tools(body)
    breakpoints = _breakpoints(body) if _marked(raw) else ()
    return Parsed(body, neutral, budget, breakpoints)


_parse_cached = lru_cache(maxsize=256)(_parse)


# --- the simulated prompt cache ----------------------------------------------------------------


class PromptCache:
    """Prefixes seen on this instance (bounded LRU): (read, created) tokens of a request."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def use(self, breakpoints: Sequence[Breakpoint]) -> tuple[int, int]:
        if not breakpoints:
            return 0, 0
        seen = self._seen
        read = 0
        for point in reversed(breakpoints):  # the longest cached prefix is read
            if point.key in seen:
                read = point.tokens
                break
        for point in breakpoints:  # every prefix is (re)written and refreshed
            seen[point.key] = point.tokens
            seen.move_to_end(point.key)
        while len(seen) > self.size:
            seen.popitem(last=False)
        return read, max(0, breakpoints[-1].tokens - read)

    def clear(self) -> None:
        self._seen.clear()


# --- rendering ------------------------------------------------------------------------------------


def _id(prefix: str, length: int = 24) -> str:
    return random_id(prefix, length)


def tool_use_id(call: ToolCall) -> str:
    """Anthropic's ``toolu_01…`` for a neutral call (stable: the same call, the same ID)."""
    return "toolu_01" + call.key[:22]


STOP_REASONS = {Finish.STOP: "end_turn", Finish.LENGTH: "max_tokens", Finish.TOOL_CALL: "tool_use"}


def stop_reason(choice: Choice) -> tuple[str, str | None]:
    hit = choice.stop_sequence
    if hit is not None and choice.finish_reason is Finish.STOP:
        return "stop_sequence", hit
    return STOP_REASONS[choice.finish_reason], None


@dataclass(slots=True)
class Thinking:
    pieces: list[str]
    signature: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def thinking_for(budget: int | None, model: str, prompt: str) -> Thinking | None:
    if budget is None:
        return None
    pieces = lorem(tokens.for_model(model), min(budget, THINKING_TOKENS), None, prompt, 0)
    return Thinking(pieces, base64.b64encode(random.randbytes(96)).decode())


def _output_tokens(generation: Generation, thinking: Thinking | None) -> int:
    """The answer's tokens and the thinking block's; an override's number (x-llmsim-usage) as is."""
    if generation.exact or thinking is None:
        return generation.completion_tokens
    return generation.completion_tokens + len(thinking.pieces)


def _usage(input_tokens: int, output_tokens: int, read: int, created: int) -> dict[str, Any]:
    return {
        "input_tokens": max(0, input_tokens - read - created),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _tool_input(call: ToolCall) -> dict[str, Any]:
    """The call's input; ``{}`` for one cut short by max_tokens (or a script's non-object)."""
    value = call.arguments
    return value if call.complete and isinstance(value, dict) else {}


def render(
    generation: Generation, model: str, instance: str, thinking: Thinking | None, cache: tuple[int, int]
) -> bytes:
    choice = generation.choices[0]
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking.text, "signature": thinking.signature})
    if choice.pieces or not choice.tool_calls:
        content.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call),
                "name": call.name,
                "input": _tool_input(call),
            }
        )
    reason, sequence = stop_reason(choice)
    output = _output_tokens(generation, thinking)
    return orjson.dumps(
        {
            "id": _id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": _usage(generation.prompt_tokens, output, *cache),
            "llmsim_instance": instance,
        }
    )


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def render_stream(
    generation: Generation, model: str, instance: str, thinking: Thinking | None, cache: tuple[int, int]
) -> Iterator[tuple[int, bytes]]:
    """Anthropic's named events, each with the generation step it belongs to (the engine paces
    them): message_start, then per content block its start, deltas and stop (a ping after the
    first block starts), message_delta with the stop reason and output tokens, message_stop."""
    choice = generation.choices[0]
    output = _output_tokens(generation, thinking)
    start = {
        "id": _id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(generation.prompt_tokens, 1, *cache),
        "llmsim_instance": instance,
    }
    yield 0, _event(b"message_start", {"type": "message_start", "message": start})
    index = 0
    pinged = False

    def block_start(block: dict[str, Any]) -> bytes:
        return _event(
            b"content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def delta(body: dict[str, Any]) -> bytes:
        return _event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})

    def block_stop() -> bytes:
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": index})

    if thinking is not None:  # thought during the prefill: sent with the first token
        yield 0, block_start({"type": "thinking", "thinking": "", "signature": ""})
        yield 0, PING
        pinged = True
        for piece in thinking.pieces:
            yield 0, delta({"type": "thinking_delta", "thinking": piece})
        yield 0, delta({"type": "signature_delta", "signature": thinking.signature})
        yield 0, block_stop()
        index += 1
    position = 0
    if choice.pieces or not choice.tool_calls:
        yield 0, block_start({"type": "text", "text": ""})
        if not pinged:
            yield 0, PING
            pinged = True
        for piece in choice.pieces:
            yield position, delta({"type": "text_delta", "text": piece})
            position += 1
        yield max(0, position - 1), block_stop()
        index += 1
    for call in choice.tool_calls:
        block = {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}
        yield position, block_start(block)
        if not pinged:
            yield position, PING
            pinged = True
        for piece in call.pieces:
            yield position, delta({"type": "input_json_delta", "partial_json": piece})
            position += 1
        yield max(0, position - 1), block_stop()
        index += 1
    last = max(0, generation.longest - 1)
    reason, sequence = stop_reason(choice)
    yield (
        last,
        _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": {"output_tokens": output},
            },
        ),
    )
    yield last, MESSAGE_STOP


# --- the wire: errors and rate-limit headers ------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _reset(seconds: float, now: float) -> bytes:
    """RFC 3339, in whole seconds (rounded up): when the bucket is full again."""
    at = datetime.fromtimestamp(math.ceil(now + max(0.0, seconds)), timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def ratelimit_headers(state: LimitState) -> Headers:
    """``anthropic-ratelimit-*``: requests from the RPM bucket; tokens, input-tokens and
    output-tokens all from the one TPM bucket (llmsim has a single token limit)."""
    now = time.time()
    headers: Headers = []
    if state.limit_requests is not None:
        headers += [
            (b"anthropic-ratelimit-requests-limit", b"%d" % state.limit_requests),
            (b"anthropic-ratelimit-requests-remaining", b"%d" % state.remaining_requests),
            (b"anthropic-ratelimit-requests-reset", _reset(state.reset_requests, now)),
        ]
    if state.limit_tokens is not None:
        reset = _reset(state.reset_tokens, now)
        for name in (b"tokens", b"input-tokens", b"output-tokens"):
            headers += [
                (b"anthropic-ratelimit-" + name + b"-limit", b"%d" % state.limit_tokens),
                (b"anthropic-ratelimit-" + name + b"-remaining", b"%d" % state.remaining_tokens),
                (b"anthropic-ratelimit-" + name + b"-reset", reset),
            ]
    return headers


def _wording(error: APIError) -> str:
    kind, data = error.kind, error.data
    if kind is Kind.AUTH:
        return "invalid x-api-key" if "key" in data else "x-api-key header is required"
    if kind is Kind.RATE_LIMITED:
        if data.get("bucket") == "tokens":
            what = f"{data.get('cap')} input tokens per minute"
        else:
            what = f"{data.get('cap')} requests per minute"
        return (
            f"This request would exceed the rate limit for your organization of {what}. For details, refer "
            "to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current "
            "usage. Please reduce the prompt length or the maximum tokens requested, or try again later."
        )
    if kind is Kind.CONTEXT_LENGTH:
        window = data["window"]
        return f"prompt is too long: {max(data.get('tokens', 0), window + 1)} tokens > {window} maximum"
    if kind is Kind.NOT_FOUND and "model" in data:
        return f"model: {shorten(data['model'], 128)}"
    if error.message:
        return error.message
    return _WORDS.get(kind, "Internal server error" if error.status >= 500 else "Invalid request")


_WORDS = {
    Kind.OVERLOADED: "Overloaded",
    Kind.QUEUE_FULL: "Overloaded",
    Kind.SERVER_ERROR: "Internal server error",
    Kind.INTERNAL: "Internal server error",
    Kind.BAD_GATEWAY: "Bad gateway",
    Kind.TIMEOUT: "Request timed out",
    Kind.SHUTTING_DOWN: "The server is shutting down",
    Kind.TOO_LARGE: "Request exceeds the maximum allowed number of bytes.",
    Kind.INVALID: "There was an error parsing the body of your request.",
}


class AnthropicWire:
    request_id_header = b"request-id"
    # A content_block_delta cut off mid-JSON, without its blank-line terminator.
    malformed_event = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"ty\n\n'
    )
    cut_event = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )

    @staticmethod
    def render_error(error: APIError, request_id: bytes) -> tuple[int, bytes, Headers]:
        status = error.status
        if error.kind is Kind.OVERLOADED and status == 503:
            status = 529  # Anthropic's overloaded status
        kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        payload = {
            "type": "error",
            "error": {"type": kind, "message": _wording(error)},
            "request_id": request_id.decode("latin-1") or None,
        }
        body = orjson.dumps(payload)
        headers: Headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(body))]
        if error.limit is not None:
            headers += ratelimit_headers(error.limit)
        if error.retry_after and error.retry_after > 0:
            headers.append((b"retry-after", b"%d" % max(1, math.ceil(error.retry_after))))
        headers += [(name.encode(), value.encode()) for name, value in error.headers.items()]
        return status, body, headers

    @staticmethod
    def limit_headers(state: LimitState) -> Headers:
        return ratelimit_headers(state)


WIRE = AnthropicWire()


def is_anthropic(scope: Scope) -> bool:
    """A request in Anthropic's dialect (``anthropic-version``), e.g. for ``GET /v1/models``."""
    return any(name == VERSION_HEADER for name, _ in scope["headers"])


def _require_version(scope: Scope) -> None:
    if not is_anthropic(scope):
        raise invalid("anthropic-version: header is required")


# --- endpoints ------------------------------------------------------------------------------------


class MessagesSurface:
    """Anthropic's ``POST /v1/messages`` for the shared endpoint (llmsim.surfaces.endpoint.Generate);
    one prompt cache per instance."""

    wire = WIRE

    def __init__(self, cache: PromptCache) -> None:
        self.cache = cache

    @staticmethod
    def check(scope: Scope) -> None:
        _require_version(scope)

    @staticmethod
    def parse(raw: bytes, models: frozenset[str]) -> tuple[Parsed, GenerationRequest]:
        parsed = parse(raw, models)
        return parsed, parsed.neutral

    def reply(self, parsed: Parsed, generation: Generation, turn: Turn, instance: str) -> Reply:
        body = parsed.body
        thinking = thinking_for(parsed.thinking_budget, body.model, parsed.neutral.last_user_text)
        if thinking is not None and not generation.exact:
            turn.completion_tokens += len(thinking.pieces)
        cache = self.cache.use(parsed.breakpoints)
        if generation.exact:  # an override's usage: its cached tokens are what was read
            cache = (generation.cached_tokens, 0)
        if body.stream:
            return Reply(
                events=render_stream(generation, body.model, instance, thinking, cache), headers=SSE_HEADERS
            )
        return Reply(render(generation, body.model, instance, thinking, cache))


class CountTokens:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, counted as the messages
    endpoint bills the same prompt. Auth applies; faults and rate limits do not."""

    surface = WIRE

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["llmsim.surface"] = WIRE
        self.engine.admit(scope)
        _require_version(scope)
        raw = await read_body(receive)
        if len(raw) > PARSE_IN_THREAD_BYTES:
            count = await in_thread(self.count, raw)
        else:
            count = self.count(raw)
        payload = orjson.dumps({"input_tokens": count})
        headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def count(self, raw: bytes) -> int:
        body: CountTokensRequest = _load(raw, CountTokensRequest)
        if body.model not in self.engine.models:
            raise APIError(404, f"model: {shorten(body.model, 128)}", kind=Kind.NOT_FOUND)
        _check_messages(body.messages)
        _tools(body)
        return count_prompt(tokens.for_model(body.model), _prompt(body))


def routes(engine: Engine) -> list[RawRoute]:
    """The surface's routes; one prompt cache per instance (per engine)."""
    cache = PromptCache()
    engine.memories.append(cache)
    described = {
        "tag": "Anthropic",
        "description": "Anthropic's Messages API; needs the `anthropic-version` header. Errors come in "
        "Anthropic's envelope.",
        "statuses": (400, 401, 404, 413, 429, 500, 529),
        "envelope": "Anthropic's",
    }
    return [
        post(
            "/v1/messages",
            Generate(engine, MessagesSurface(cache)),
            MessagesRequest,
            summary="Create a message",
            operation_id="create_message",
            answer='A `message`; with `"stream": true` Anthropic\'s named events, `message_start` to '
            "`message_stop`.",
            **described,
        ),
        post(
            "/v1/messages/count_tokens",
            CountTokens(engine),
            CountTokensRequest,
            summary="Count the tokens of a message",
            operation_id="count_message_tokens",
            answer='`{"input_tokens": N}`',
            content=JSON_ONLY,
            **described,
        ),
    ]


# --- GET /v1/models in Anthropic's shape ------------------------------------------------------

CREATED_AT = "2025-01-01T00:00:00Z"  # fixed, so every instance answers the same


def _display_name(model_id: str) -> str:
    return " ".join(
        part.capitalize()
        for part in model_id.replace("_", "-").split("-")
        if not part.isdigit() or len(part) < 8
    )


def _model(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": _display_name(model_id),
        "created_at": CREATED_AT,
        "lifecycle": "active",
        "max_tokens": MAX_OUTPUT_TOKENS,
    }


def model_list(models: Sequence[str]) -> dict[str, Any]:
    data = [_model(m) for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def model(model_id: str, models: Sequence[str]) -> dict[str, Any]:
    if model_id not in models:
        raise APIError(404, f"model: {shorten(model_id, 128)}", kind=Kind.NOT_FOUND)
    return _model(model_id)
