"""OpenAI's Responses API (``/v1/responses`` and its companions): wire format in, neutral request out,
and back again, as a whole ``response`` object or OpenAI's typed events.

- ``POST /v1/responses`` generates (through :class:`~llmsim.surfaces.endpoint.Generate`);
  ``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and
  ``POST /v1/responses/input_tokens`` read this instance's store and generate nothing (auth
  applies; faults and rate limits do not).
- The instance ID is in the ``x-llmsim-instance`` header (the Pipeline's) and in the body as the
  top-level ``llmsim_instance`` field of every response object (the body, and the ``response``
  of ``response.created``/``in_progress``/``completed``/``incomplete``/``failed``): the SDKs keep
  unknown fields, and it survives a gateway that drops headers. ``metadata`` stays the client's.
- Responses are stored per instance (``store``, default true) in a bounded LRU
  (:data:`STORE_RESPONSES` responses and :data:`STORE_CHARS` characters of text, whichever is
  reached first): ``previous_response_id`` prepends the stored turns (inputs and outputs, not
  the earlier ``instructions``) to the prompt; an unknown or evicted ID is OpenAI's 404. A
  streamed response is stored as it will end, when the stream starts.
- Reasoning models (o-series, gpt-5) answer with a ``reasoning`` item (empty summary, as OpenAI
  sends without ``reasoning.summary``) before the message; ``reasoning_tokens`` come from the
  generation. ``reasoning`` on another model is OpenAI's ``unsupported_parameter``.
- Streams are OpenAI's named events, each with a ``sequence_number``, and no ``[DONE]``; delta
  events carry ``obfuscation`` padding unless ``stream_options.include_obfuscation`` is false.
  The ``response`` of ``response.created``/``in_progress`` has no ``usage`` (OpenAI sends null,
  which its own schema does not allow).
  Mid-stream faults: ``malformed`` sends one truncated ``response.output_text.delta`` and
  carries on; ``disconnect`` sends ``response.failed`` (status ``failed``, error
  ``server_error``) with the next sequence number, then drops the connection.
- Not simulated: built-in tools (web search, file search …: a 400 naming ``tools[i].type``),
  ``conversation`` and ``background`` (400, ``unsupported_parameter``), logprobs (always ``[]``),
  ``POST /v1/responses/{id}/cancel``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import parse_qsl

import orjson
from pydantic import BeforeValidator, Field, ValidationError
from starlette.types import Receive, Scope, Send

from llmsim import schema_values, tokens
from llmsim.engine import Engine, Turn
from llmsim.errors import APIError, shorten
from llmsim.generation import (
    Choice,
    Finish,
    Generation,
    GenerationRequest,
    PromptMessage,
    ToolSpec,
    count_prompt,
    reasons,
)
from llmsim.surfaces import base
from llmsim.surfaces.base import JSON, SSE_HEADERS, read_body
from llmsim.surfaces.endpoint import PARSE_IN_THREAD_BYTES, Generate, Reply
from llmsim.surfaces.openai_fields import Int, Model, StreamOptions, Text
from llmsim.surfaces.routes import JSON_ONLY, RawRoute, errors, post
from llmsim.surfaces.validation import check_complexity, to_api_error
from llmsim.workers import in_thread

MAX_ITEMS = 4096  # input items of a request
MAX_PARTS = 1024  # content parts of one message
MAX_TOOLS = 128
MAX_METADATA = 16  # key-value pairs, keys of at most 64 characters, values of at most 512
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens
MAX_OUTPUT_TOKENS = 1_000_000
STORE_RESPONSES = 10_000  # responses remembered per instance (LRU)
STORE_CHARS = 64 * 1024 * 1024  # ...and the characters of text they may hold together
DELTA_BATCH = 256  # delta events a stream builds at once
CACHED_BODY_BYTES = 8 * 1024  # bodies this small have their validation remembered (the last 256)

# --- request models --------------------------------------------------------------------------


class InputText(Model):
    type: Literal["input_text"]
    text: Text


class InputImage(Model):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto"] | None = None


class InputFile(Model):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(Model):
    type: Literal["output_text"]
    text: Text
    annotations: list[Any] | None = None


class Refusal(Model):
    type: Literal["refusal"]
    refusal: Text


Part = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")


class MessageItem(Model):
    type: Literal["message"]
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | Annotated[list[Part], Field(max_length=MAX_PARTS)]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Model):
    type: Literal["function_call"]
    call_id: str = Field(max_length=256)
    name: str = Field(max_length=256)
    arguments: Text
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Model):
    type: Literal["function_call_output"]
    call_id: str = Field(max_length=256)
    output: Text | Annotated[list[Part], Field(max_length=MAX_PARTS)]
    id: str | None = None
    status: str | None = None


class ReasoningInput(Model):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Any] = Field(default_factory=list, max_length=MAX_PARTS)
    encrypted_content: str | None = None


class ItemReference(Model):
    type: Literal["item_reference"]
    id: str


def _message_by_default(value: Any) -> Any:
    """An item without ``type`` is a message (OpenAI's "easy input message")."""
    if isinstance(value, dict) and "type" not in value and "role" in value:
        return {**value, "type": "message"}
    return value


Item = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningInput | ItemReference,
    Field(discriminator="type"),
    BeforeValidator(_message_by_default),
]


class FunctionTool(Model):
    type: Literal["function"]
    name: str = Field(max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(Model):
    type: Literal["function"]
    name: str


class FormatText(Model):
    type: Literal["text"]


class FormatJsonObject(Model):
    type: Literal["json_object"]


class FormatJsonSchema(Model):
    type: Literal["json_schema"]
    name: str = Field(max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Model):
    format: (
        Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")] | None
    ) = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Model):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class _Prompt(Model):
    instructions: Text | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(None, max_length=256)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    conversation: Any = None
    truncation: Literal["auto", "disabled"] | None = None


class CreateResponse(_Prompt):
    """The body of ``POST /v1/responses`` (the fields llmsim reads; others are ignored)."""

    model: str
    input: Text | Annotated[list[Item], Field(max_length=MAX_ITEMS)]
    max_output_tokens: Int | None = Field(None, ge=MIN_OUTPUT_TOKENS, le=MAX_OUTPUT_TOKENS)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    max_tool_calls: Int | None = Field(None, ge=1)
    include: Annotated[list[str], Field(max_length=64)] | None = None
    background: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class InputTokensRequest(_Prompt):
    """The body of ``POST /v1/responses/input_tokens``."""

    model: str | None = None
    input: Text | Annotated[list[Item], Field(max_length=MAX_ITEMS)] | None = None


# --- the store ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """One stored response. Only the served bytes and the request (shared by identical bodies)
    are kept per response; what a later turn or ``input_items`` reads is derived from them
    when first asked for, not on every stored response (most are never read again)."""

    # The response object as served: bytes, not the dict, so the collector has ~25 fewer objects
    # an entry to walk (10,000 entries stay alive).
    response: bytes
    # The request, its input as prompt messages and its call_ids: the parse's own objects (shared
    # by identical bodies), not the parse, whose response template an entry would keep alive.
    body: CreateResponse
    own: tuple[PromptMessage, ...]
    calls: frozenset[str]
    size: int  # characters of text (an estimate), against STORE_CHARS
    _items: list[dict[str, Any]] | None = None
    _exchange: Exchange | None = None

    @property
    def previous(self) -> str | None:
        return self.body.previous_response_id

    @property
    def items(self) -> list[dict[str, Any]]:
        """Its input items (with IDs, stable once built), oldest first."""
        if self._items is None:
            self._items = _input_items(self.body)
        return self._items

    @property
    def exchange(self) -> Exchange:
        """This turn's input and output as prompt messages, the call_ids they hold, and those
        of the function calls it answered with (read back from the served output)."""
        if self._exchange is None:
            messages = list(self.own)
            pending = []
            for item in orjson.loads(self.response)["output"]:
                if item["type"] == "message":
                    text = "".join(part.get("text", "") for part in item["content"])
                    if text:
                        messages.append(PromptMessage("assistant", (text,)))
                elif item["type"] == "function_call":
                    messages.append(PromptMessage("assistant", (item["name"], item["arguments"])))
                    pending.append(item["call_id"])
            self._exchange = Exchange(tuple(messages), self.calls.union(pending), tuple(pending))
        return self._exchange


class Exchange(NamedTuple):
    messages: tuple[PromptMessage, ...]
    calls: frozenset[str]  # call_ids of the function calls in its input and output
    pending: tuple[str, ...]  # call_ids of the function calls it answered with


class Store:
    """This instance's responses, bounded (LRU) by count and by characters of text. A lock, as
    large bodies are parsed (and look up earlier turns) in worker threads."""

    def __init__(self, size: int = STORE_RESPONSES, chars: int = STORE_CHARS) -> None:
        self.size, self.chars = size, chars
        self.used = 0
        self._entries: OrderedDict[str, Stored] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, entry: Stored) -> None:
        with self._lock:
            entries = self._entries
            entries[key] = entry
            self.used += entry.size
            while entries and (len(entries) > self.size or self.used > self.chars):
                _, gone = entries.popitem(last=False)
                self.used -= gone.size

    def revise(self, key: str, response: bytes) -> None:
        """Replace a stored response's body (a stream that failed after it was stored)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.response = response
                entry._exchange = None

    def get(self, key: str) -> Stored | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def delete(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.used -= entry.size
            return entry is not None

    def chain(self, key: str) -> tuple[list[PromptMessage], set[str], tuple[str, ...]]:
        """The turns up to and including ``key`` (oldest first), the call_ids they hold, and the
        calls ``key`` itself left unanswered; an unknown ``key`` is OpenAI's 404."""
        entry = self.get(key)
        if entry is None:
            raise APIError(
                404,
                f"Previous response with id '{shorten(key, 64)}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        pending = entry.exchange.pending
        turns: list[tuple[PromptMessage, ...]] = []
        calls: set[str] = set()
        seen = 0
        while entry is not None and seen <= self.size:  # an evicted ancestor ends the chain
            exchange = entry.exchange
            turns.append(exchange.messages)
            calls |= exchange.calls
            seen += 1
            entry = self.get(entry.previous) if entry.previous else None
        return [m for turn in reversed(turns) for m in turn], calls, pending

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.used = 0


# --- parsing -----------------------------------------------------------------------------------


def invalid(message: str, param: str | None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param, code)


def unsupported(param: str, message: str) -> APIError:
    return APIError(400, message, param, "unsupported_parameter")


@dataclass(slots=True)
class Parsed:
    """A validated request, independent of the store (so it can be remembered by its bytes)."""

    body: CreateResponse
    neutral: GenerationRequest  # without earlier turns
    own: tuple[PromptMessage, ...]  # this request's input (no instructions)
    calls: frozenset[str]  # call_ids of function_call items in the input
    answered: frozenset[str]  # call_ids of function_call_output items in the input
    outputs: tuple[tuple[int, str], ...]  # (input index, call_id) of every function_call_output
    # The response object's fields that only the request decides, in OpenAI's order (built once a
    # parse: identical bodies share their parse), and the characters of the input's text.
    template: dict[str, Any] | None = None
    chars: int = 0


@dataclass(slots=True)
class Request:
    """A request with its earlier turns: what ``reply`` renders."""

    parsed: Parsed
    neutral: GenerationRequest


def _part_texts(parts: Sequence[Any]) -> tuple[list[str], int]:
    texts, images = [], 0
    for part in parts:
        kind = part.type
        if kind in ("input_text", "output_text"):
            texts.append(part.text)
        elif kind == "refusal":
            texts.append(part.refusal)
        else:
            images += 1
    return texts, images


def _input_messages(
    value: str | list[Any] | None, where: str = "input"
) -> tuple[list[PromptMessage], set[str], set[str], list[tuple[int, str]]]:
    """The prompt messages of ``input``, the call_ids it calls and answers, and where it answers."""
    if value is None:
        return [], set(), set(), []
    if isinstance(value, str):
        return [PromptMessage("user", (value,))], set(), set(), []
    messages: list[PromptMessage] = []
    calls: set[str] = set()
    answered: set[str] = set()
    outputs: list[tuple[int, str]] = []
    for i, item in enumerate(value):
        kind = item.type
        if kind == "message":
            content = item.content
            if isinstance(content, str):
                messages.append(PromptMessage(item.role, (content,)))
                continue
            allowed = OUTPUT_PARTS if item.role == "assistant" else INPUT_PARTS
            for j, part in enumerate(content):
                if part.type not in allowed:
                    names = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
                    if len(allowed) == 2:
                        names = f"'{allowed[0]}' and '{allowed[1]}'"
                    raise invalid(
                        f"Invalid value: '{part.type}'. Supported values are: {names}.",
                        f"{where}[{i}].content[{j}]",
                    )
            texts, images = _part_texts(content)
            messages.append(PromptMessage(item.role, tuple(texts), None, images))
        elif kind == "function_call":
            calls.add(item.call_id)
            messages.append(PromptMessage("assistant", (item.name, item.arguments)))
        elif kind == "function_call_output":
            answered.add(item.call_id)
            outputs.append((i, item.call_id))
            output = item.output
            if isinstance(output, str):
                messages.append(PromptMessage("tool", (output,)))
            else:
                texts, images = _part_texts(output)
                messages.append(PromptMessage("tool", tuple(texts), None, images))
        # reasoning and item_reference items carry no text the prompt is billed for
    return messages, calls, answered, outputs


def _tools(body: _Prompt) -> tuple[tuple[ToolSpec, ...], str, bool]:
    tools = tuple(ToolSpec(t.name, t.parameters or {}) for t in body.tools or ())
    for i, tool in enumerate(tools):
        try:
            schema_values.check(tool.parameters)
        except schema_values.SchemaError as exc:
            raise invalid(
                f"Invalid schema for function '{shorten(tool.name, 64)}': {exc}",
                f"tools[{i}].parameters",
                "invalid_function_parameters",
            ) from None
    parallel = body.parallel_tool_calls is not False
    choice = body.tool_choice
    if choice is None:
        return tools, "auto" if tools else "none", parallel
    if isinstance(choice, FunctionChoice):
        if choice.name not in {t.name for t in tools}:
            raise invalid(
                f"Tool choice '{shorten(choice.name, 64)}' not found in 'tools' parameter.", "tool_choice"
            )
        return tools, f"function:{choice.name}", parallel
    if choice == "required" and not tools:
        raise invalid("Tool choice 'required' must be specified with 'tools' parameter.", "tool_choice")
    return tools, choice, parallel


def _check_common(body: _Prompt, model: str | None) -> None:
    if body.conversation is not None:
        raise unsupported(
            "conversation", "llmsim does not simulate conversations: use 'previous_response_id'."
        )
    reasoning = body.reasoning
    if reasoning is not None and reasoning.effort is not None and model and not reasons(model):
        raise unsupported(
            "reasoning.effort",
            "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
        )


def _format(text: TextConfig | None, neutral: GenerationRequest) -> None:
    fmt = text.format if text is not None else None
    if isinstance(fmt, FormatJsonObject):
        neutral.json_object = True
    elif isinstance(fmt, FormatJsonSchema):
        try:
            schema_values.check(fmt.schema_)
        except schema_values.SchemaError as exc:
            raise invalid(
                f"Invalid schema for response_format '{shorten(fmt.name, 64)}': {exc}", "text.format.schema"
            ) from None
        neutral.json_schema = fmt.schema_


def _validate(raw: bytes, model: type[Model]) -> Any:
    check_complexity(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise to_api_error(exc, raw) from None


def _model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{shorten(model)}` does not exist or you do not have access to it.",
        "model",
        "model_not_found",
    )


def _parse(raw: bytes, models: frozenset[str]) -> Parsed:
    body: CreateResponse = _validate(raw, CreateResponse)
    if body.model not in models:
        raise _model_not_found(body.model)
    if body.background:
        raise unsupported("background", "llmsim does not simulate background responses.")
    _check_common(body, body.model)
    if body.metadata is not None:
        if len(body.metadata) > MAX_METADATA:
            raise invalid(
                f"Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA} "
                f"properties, but got an object with {len(body.metadata)} properties instead.",
                "metadata",
                "object_above_max_properties",
            )
        for key in body.metadata:
            if len(key) > 64:
                raise invalid(
                    f"Invalid 'metadata': string too long. Expected a string with maximum length 64, but "
                    f"got a string with length {len(key)} instead.",
                    "metadata",
                    "string_above_max_length",
                )
    own, calls, answered, outputs = _input_messages(body.input)
    messages = [PromptMessage("developer", (body.instructions,))] if body.instructions else []
    neutral = GenerationRequest(
        model=body.model,
        messages=messages + own,
        max_tokens=body.max_output_tokens,
        stream=bool(body.stream),
        reasoning_effort=body.reasoning.effort if body.reasoning is not None else None,
    )
    if body.tools or body.tool_choice is not None:
        neutral.tools, neutral.tool_choice, neutral.parallel_tool_calls = _tools(body)
    _format(body.text, neutral)
    chars = sum(len(t) for m in own for t in m.texts) + len(body.instructions or "")
    parsed = Parsed(body, neutral, tuple(own), frozenset(calls), frozenset(answered), tuple(outputs))
    parsed.chars = chars
    return parsed


_parse_cached = lru_cache(maxsize=256)(_parse)


def _with_history(
    store: Store,
    previous: str | None,
    instructions: str | None,
    own: Sequence[PromptMessage],
    calls: frozenset[str],
    answered: frozenset[str],
    outputs: Sequence[tuple[int, str]],
) -> list[PromptMessage] | None:
    """The prompt with the earlier turns (None: no earlier turns); every function_call_output
    answers a call in the context, and every call of the previous response is answered."""
    history: list[PromptMessage] = []
    known: set[str] | frozenset[str] = calls
    if previous is not None:
        history, held, pending = store.chain(previous)
        known = held | calls
        for call_id in pending:
            if call_id not in answered:
                raise invalid(f"No tool output found for function call {shorten(call_id, 64)}.", "input")
    for _, call_id in outputs:
        if call_id not in known:
            raise invalid(
                f"No tool call found for function call output with call_id {shorten(call_id, 64)}.", "input"
            )
    if previous is None:
        return None
    head = [PromptMessage("developer", (instructions,))] if instructions else []
    return head + history + list(own)


# --- rendering -----------------------------------------------------------------------------------


def _id(prefix: str) -> str:
    return prefix + random.randbytes(24).hex()


FINISHED = {Finish.STOP: "completed", Finish.TOOL_CALL: "completed", Finish.LENGTH: "incomplete"}
FAILED_MESSAGE = (
    "An error occurred while processing your request. You can retry your request, or contact us through "
    "our help center at help.openai.com if the error persists."
)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _tool_echo(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": True if tool.strict is None else tool.strict,
    }


def _format_echo(text: TextConfig | None) -> dict[str, Any]:
    fmt = text.format if text is not None else None
    verbosity = (text.verbosity if text is not None else None) or "medium"
    if isinstance(fmt, FormatJsonSchema):
        shown = {
            "type": "json_schema",
            "name": fmt.name,
            "schema": fmt.schema_,
            "description": fmt.description,
            "strict": bool(fmt.strict),
        }
    elif isinstance(fmt, FormatJsonObject):
        shown = {"type": "json_object"}
    else:
        shown = {"type": "text"}
    return {"format": shown, "verbosity": verbosity}


def _usage(generation: Generation) -> dict[str, Any]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": generation.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": generation.reasoning_tokens},
        "total_tokens": prompt + completion,
    }


@dataclass(slots=True)
class Outline:
    """The IDs and shape of one answer, shared by its body, its events and its stored copy."""

    response_id: str
    created: int
    reasoning_id: str | None
    message_id: str | None
    call_ids: list[str]  # fc_… item IDs, one per tool call
    status: str  # completed | incomplete


def _outline(parsed: Parsed, choice: Choice) -> Outline:
    model = parsed.body.model
    effort = parsed.body.reasoning.effort if parsed.body.reasoning is not None else None
    reasoning = reasons(model) and effort != "none"
    return Outline(
        _id("resp_"),
        int(time.time()),
        _id("rs_") if reasoning else None,
        _id("msg_") if choice.pieces or not choice.tool_calls else None,
        [_id("fc_") for _ in choice.tool_calls],
        FINISHED[choice.finish_reason],
    )


def _template(parsed: Parsed) -> dict[str, Any]:
    """The response object with every field the request alone decides filled in (None marks the
    per-response ones), in OpenAI's order."""
    body = parsed.body
    reasoning = body.reasoning
    if reasons(body.model):
        shown_reasoning = {
            "effort": (reasoning.effort if reasoning else None) or "medium",
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        }
    else:
        shown_reasoning = {"effort": None, "summary": None}
    choice = body.tool_choice
    return {
        "id": None,
        "object": "response",
        "created_at": None,
        "status": None,
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "model": body.model,
        "output": None,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "reasoning": shown_reasoning,
        "safety_identifier": body.safety_identifier,
        "service_tier": "default",
        "store": body.store is not False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": _format_echo(body.text),
        "tool_choice": choice.model_dump() if isinstance(choice, FunctionChoice) else choice or "auto",
        "tools": [_tool_echo(t) for t in body.tools or ()],
        "top_logprobs": body.top_logprobs or 0,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "usage": None,
        **({"user": body.user} if body.user is not None else {}),  # deprecated: not sent unless set
        "metadata": body.metadata or {},
        "llmsim_instance": None,
    }


def _response(
    parsed: Parsed, outline: Outline, instance: str, status: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    template = parsed.template
    if template is None:
        template = parsed.template = _template(parsed)
    response = template.copy()  # shallow: the nested values are the request's, never changed
    response["id"] = outline.response_id
    response["created_at"] = outline.created
    response["status"] = status
    if status == "completed":
        response["completed_at"] = int(time.time())
    elif status == "failed":
        response["error"] = {"code": "server_error", "message": FAILED_MESSAGE}
    elif status == "incomplete":
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    response["output"] = output
    if usage is None:
        del response["usage"]  # none before the end: OpenAI's schema has no null usage
    else:
        response["usage"] = usage
    response["llmsim_instance"] = instance
    return response


def _reasoning_item(outline: Outline) -> dict[str, Any]:
    return {"id": outline.reasoning_id, "type": "reasoning", "summary": []}


def _message_item(outline: Outline, text: str, status: str, parts: bool = True) -> dict[str, Any]:
    return {
        "id": outline.message_id,
        "type": "message",
        "status": status,
        "content": [_text_part(text)] if parts else [],
        "role": "assistant",
    }


def _call_item(item_id: str, call: Any, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": "call_" + call.key,
        "name": call.name,
    }


def _output(outline: Outline, choice: Choice) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if outline.reasoning_id is not None:
        items.append(_reasoning_item(outline))
    if outline.message_id is not None:
        items.append(_message_item(outline, choice.text, outline.status))
    for item_id, call in zip(outline.call_ids, choice.tool_calls, strict=True):
        items.append(_call_item(item_id, call, call.json, "completed" if call.complete else "incomplete"))
    return items


def _input_items(body: CreateResponse) -> list[dict[str, Any]]:
    """The request's input as stored input items (``ItemResource``), with IDs."""
    value = body.input
    if isinstance(value, str):
        return [
            {
                "id": _id("msg_"),
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": value}],
            }
        ]
    items: list[dict[str, Any]] = []
    for item in value:
        kind = item.type
        if kind == "message":
            content = item.content
            if isinstance(content, str):
                parts = [
                    _text_part(content)
                    if item.role == "assistant"
                    else {"type": "input_text", "text": content}
                ]
            else:
                parts = [
                    _text_part(p.text) if p.type == "output_text" else p.model_dump(exclude_none=True)
                    for p in content
                ]
            items.append(
                {
                    "id": item.id or _id("msg_"),
                    "type": "message",
                    "role": item.role,
                    "status": "completed",
                    "content": parts,
                }
            )
        elif kind == "function_call":
            items.append(
                {
                    "id": item.id or _id("fc_"),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": item.arguments,
                    "call_id": item.call_id,
                    "name": item.name,
                }
            )
        elif kind == "function_call_output":
            output = item.output
            items.append(
                {
                    "id": item.id or _id("fco_"),
                    "type": "function_call_output",
                    "status": "completed",
                    "call_id": item.call_id,
                    "output": output
                    if isinstance(output, str)
                    else [p.model_dump(exclude_none=True) for p in output],
                }
            )
        elif kind == "reasoning":
            items.append(
                {"id": item.id or _id("rs_"), "type": "reasoning", "summary": item.summary}
                | ({"encrypted_content": item.encrypted_content} if item.encrypted_content else {})
            )
    return items


def _size(parsed: Parsed, payload: bytes) -> int:
    """An entry's characters, estimated without walking it: the input's text twice (messages and
    items), the served body (the output's text is in it) twice more, and a share per item."""
    value = parsed.body.input
    items = 1 if isinstance(value, str) else len(value or ())
    return 2 * parsed.chars + 2 * len(payload) + 256 * (items + 1)


# --- streaming ---------------------------------------------------------------------------------

_OBFUSCATION_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PAD = bytes(_OBFUSCATION_ALPHABET[b % len(_OBFUSCATION_ALPHABET)] for b in random.randbytes(4096))


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponseStream:
    """One response's events (OpenAI's order, each with the generation step it belongs to), and
    the ``response.failed`` a disconnect fault sends in their place (:class:`StreamWire`)."""

    def __init__(
        self,
        parsed: Parsed,
        outline: Outline,
        generation: Generation,
        instance: str,
        final: dict[str, Any],
        payload: bytes,
        store: Store | None,
    ) -> None:
        self.parsed, self.outline, self.generation = parsed, outline, generation
        self.store = store  # where the response was stored (None: not stored)
        self.instance, self.final = instance, final
        self.payload = payload  # ``final`` serialised (the store's copy): the last event reuses it
        self.sequence = 0  # the number of the next event
        options = parsed.body.stream_options
        self.obfuscate = options is None or options.include_obfuscation is not False

    def _skeleton(self, status: str) -> dict[str, Any]:
        return _response(self.parsed, self.outline, self.instance, status, [], None)

    def _next(self, name: str, payload: dict[str, Any]) -> bytes:
        payload["sequence_number"] = self.sequence
        self.sequence += 1
        return _event(name, payload)

    def _deltas(self, name: str, fields: dict[str, Any], pieces: Sequence[str]) -> Iterator[bytes]:
        """One item's delta events: the fixed fields serialised once, then per token its ``delta``,
        OpenAI's ``obfuscation`` (random characters that even out the events' sizes, unless
        ``stream_options.include_obfuscation`` is false) and its sequence number.

        Built DELTA_BATCH at a time in one comprehension (a long answer is never all in memory);
        ``sequence`` moves as each is handed out, so a disconnect fault's ``response.failed`` takes
        the number of the first not sent."""
        head = _event(name, {"type": name, **fields})[:-3] + b',"delta":'
        dumps, pad = orjson.dumps, _PAD
        span = len(pad) - 16
        offset = random.randrange(span)  # one draw a stream; each event steps through the pad
        for at in range(0, len(pieces), DELTA_BATCH):
            first = self.sequence
            batch = enumerate(pieces[at : at + DELTA_BATCH], first)
            if self.obfuscate:
                events = [
                    b'%s%s,"obfuscation":"%s","sequence_number":%d}\n\n'
                    % (
                        head,
                        dumps(piece),
                        pad[
                            (start := (offset + n * 61) % span) : start
                            + (16 - len(piece) if len(piece) < 16 else 4)
                        ],
                        n,
                    )
                    for n, piece in batch
                ]
            else:
                events = [b'%s%s,"sequence_number":%d}\n\n' % (head, dumps(piece), n) for n, piece in batch]
            for number, event in enumerate(events, first + 1):
                self.sequence = number  # the next event's number, once this one is out
                yield event

    def failed_event(self) -> bytes:
        """``response.failed``, numbered as the event it replaces (the first one not sent). A
        stored response becomes what the client was told: the failed one."""
        self.sequence = max(0, self.sequence - 1)
        failed = self._skeleton("failed")
        if self.store is not None:
            self.store.revise(self.outline.response_id, orjson.dumps(failed))
        return self._next("response.failed", {"type": "response.failed", "response": failed})

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        outline, generation = self.outline, self.generation
        choice = generation.choices[0]
        nxt, whole = self._next, self._whole
        skeleton = orjson.dumps(self._skeleton("in_progress"))
        yield 0, whole(b"response.created", skeleton)
        yield 0, whole(b"response.in_progress", skeleton)
        index = 0
        if outline.reasoning_id is not None:  # thought during the prefill: sent with the first token
            item = _reasoning_item(outline)
            yield (
                0,
                nxt(
                    "response.output_item.added",
                    {"type": "response.output_item.added", "output_index": index, "item": item},
                ),
            )
            yield (
                0,
                nxt(
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": index, "item": item},
                ),
            )
            index += 1
        position = 0
        if outline.message_id is not None:
            item_id = outline.message_id
            added = _message_item(outline, "", "in_progress", parts=False)
            yield (
                0,
                nxt(
                    "response.output_item.added",
                    {"type": "response.output_item.added", "output_index": index, "item": added},
                ),
            )
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            yield (
                0,
                nxt(
                    "response.content_part.added",
                    {"type": "response.content_part.added", **where, "part": _text_part("")},
                ),
            )
            fields = {**where, "logprobs": []}
            for event in self._deltas("response.output_text.delta", fields, choice.pieces):
                yield position, event
                position += 1
            last = max(0, position - 1)
            text = choice.text
            yield (
                last,
                nxt(
                    "response.output_text.done",
                    {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
                ),
            )
            yield (
                last,
                nxt(
                    "response.content_part.done",
                    {"type": "response.content_part.done", **where, "part": _text_part(text)},
                ),
            )
            done = _message_item(outline, text, outline.status)
            yield (
                last,
                nxt(
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": index, "item": done},
                ),
            )
            index += 1
        for item_id, call in zip(outline.call_ids, choice.tool_calls, strict=True):
            added = _call_item(item_id, call, "", "in_progress")
            yield (
                position,
                nxt(
                    "response.output_item.added",
                    {"type": "response.output_item.added", "output_index": index, "item": added},
                ),
            )
            where = {"item_id": item_id, "output_index": index}
            for event in self._deltas("response.function_call_arguments.delta", where, call.pieces):
                yield position, event
                position += 1
            last = max(0, position - 1)
            arguments = call.json
            yield (
                last,
                nxt(
                    "response.function_call_arguments.done",
                    {
                        "type": "response.function_call_arguments.done",
                        **where,
                        "name": call.name,
                        "arguments": arguments,
                    },
                ),
            )
            done = _call_item(item_id, call, arguments, "completed" if call.complete else "incomplete")
            yield (
                last,
                nxt(
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": index, "item": done},
                ),
            )
            index += 1
        end = max(0, generation.longest - 1)
        name = b"response.completed" if self.final["status"] == "completed" else b"response.incomplete"
        yield end, whole(name, self.payload)

    def _whole(self, name: bytes, response: bytes) -> bytes:
        """An event carrying the whole response object, already serialised."""
        number = self.sequence
        self.sequence = number + 1
        return b'event: %s\ndata: {"type":"%s","response":%s,"sequence_number":%d}\n\n' % (
            name,
            name,
            response,
            number,
        )


# --- the wire: OpenAI's, with the Responses stream's own mid-stream events --------------------------


class ResponsesWire:
    """OpenAI's wire (envelope, headers: delegated to the default one) with a corrupt event in the
    Responses stream's shape for the malformed fault."""

    malformed_event = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"msg_\n\n'
    )
    cut_event: bytes | None = None
    request_id_header = base.OPENAI.request_id_header  # read on every response: not through __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(base.OPENAI, name)


class StreamWire(ResponsesWire):
    """One stream's wire: a disconnect fault sends that stream's ``response.failed`` first."""

    def __init__(self, stream: ResponseStream) -> None:
        self._stream = stream

    @property
    def cut_event(self) -> bytes | None:  # type: ignore[override]
        return self._stream.failed_event()


WIRE = ResponsesWire()

# --- endpoints ---------------------------------------------------------------------------------


class ResponsesSurface:
    """``POST /v1/responses`` for the shared endpoint (llmsim.surfaces.endpoint.Generate)."""

    wire = WIRE

    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self, scope: Scope) -> None:
        pass

    def parse(self, raw: bytes, models: frozenset[str]) -> tuple[Request, GenerationRequest]:
        parsed = _parse(raw, models) if len(raw) > CACHED_BODY_BYTES else _parse_cached(raw, models)
        body = parsed.body
        prompt = _with_history(
            self.store,
            body.previous_response_id,
            body.instructions,
            parsed.own,
            parsed.calls,
            parsed.answered,
            parsed.outputs,
        )
        neutral = parsed.neutral
        if prompt is not None:
            neutral = replace(neutral, messages=prompt)
        return Request(parsed, neutral), neutral

    def reply(self, request: Request, generation: Generation, turn: Turn, instance: str) -> Reply:
        parsed = request.parsed
        body = parsed.body
        choice = generation.choices[0]
        outline = _outline(parsed, choice)
        final = _response(
            parsed, outline, instance, outline.status, _output(outline, choice), _usage(generation)
        )
        payload = orjson.dumps(final)
        if body.store is not False:
            entry = Stored(payload, body, parsed.own, parsed.calls, _size(parsed, payload))
            self.store.put(outline.response_id, entry)
        if body.stream:
            stored = self.store if body.store is not False else None
            stream = ResponseStream(parsed, outline, generation, instance, final, payload, stored)
            turn.wire = StreamWire(stream)  # this stream's own response.failed for a disconnect fault
            return Reply(events=iter(stream), headers=SSE_HEADERS)
        return Reply(payload)


async def _answer(send: Send, payload: dict[str, Any]) -> None:
    await _send_json(send, orjson.dumps(payload))


async def _send_json(send: Send, data: bytes) -> None:
    headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{shorten(response_id, 64)}' not found.", None, None)


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


class StoredResponses:
    """``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``: this
    instance's store. Auth applies; faults and rate limits do not."""

    def __init__(self, engine: Engine, store: Store, action: str) -> None:
        self.engine, self.store, self.action = engine, store, action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.engine.admit(scope)
        response_id = scope["path_params"]["response_id"]
        if self.action == "delete":
            if not self.store.delete(response_id):
                raise _not_found(response_id)
            await _answer(send, {"id": response_id, "object": "response", "deleted": True})
            return
        entry = self.store.get(response_id)
        if entry is None:
            raise _not_found(response_id)
        if self.action == "get":
            await _send_json(send, entry.response)
        else:
            await _answer(send, item_page(entry.items, _query(scope)))


def item_page(items: Sequence[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """OpenAI's ``ResponseItemList``: ``order`` desc (the default) or asc, ``limit`` 1-100 (20),
    ``after`` an item ID."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid(
            f"Invalid value: '{shorten(order, 32)}'. Supported values are: 'asc' and 'desc'.", "order"
        )
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid(
            "Invalid type for 'limit': expected an integer, but got a string instead.",
            "limit",
            "invalid_type",
        ) from None
    if not 1 <= limit <= 100:
        raise invalid(
            f"Invalid 'limit': expected a value between 1 and 100, but got {limit} instead.", "limit"
        )
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }


class InputTokens:
    """``POST /v1/responses/input_tokens``: ``{"object": "response.input_tokens", "input_tokens": N}``,
    counted as ``POST /v1/responses`` bills the same prompt (earlier turns included)."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine, self.store = engine, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.engine.admit(scope)
        raw = await read_body(receive)
        if len(raw) > PARSE_IN_THREAD_BYTES:
            count = await in_thread(self.count, raw)
        else:
            count = self.count(raw)
        await _answer(send, {"object": "response.input_tokens", "input_tokens": count})

    def count(self, raw: bytes) -> int:
        body: InputTokensRequest = _validate(raw, InputTokensRequest)
        model = body.model
        if model is not None and model not in self.engine.models:
            raise _model_not_found(model)
        _check_common(body, model)
        own, calls, answered, outputs = _input_messages(body.input)
        if body.tools or body.tool_choice is not None:
            _tools(body)
        _format(body.text, GenerationRequest(model or "gpt-4o", []))
        prompt = _with_history(
            self.store,
            body.previous_response_id,
            body.instructions,
            own,
            frozenset(calls),
            frozenset(answered),
            outputs,
        )
        if prompt is None:
            prompt = ([PromptMessage("developer", (body.instructions,))] if body.instructions else []) + own
        return count_prompt(tokens.for_model(model or "gpt-4o"), prompt)


def _path_parameter() -> list[dict[str, Any]]:
    return [
        {
            "name": "response_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The ID of the response (`resp_…`).",
        }
    ]


def _read_route(
    path: str, endpoint: Any, method: str, operation_id: str, summary: str, answer: str, query: bool = False
) -> RawRoute:
    parameters = _path_parameter()
    if query:
        parameters += [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
            {
                "name": "order",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
            },
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        ]
    return RawRoute(
        path,
        endpoint,
        methods=[method],
        operation={
            "tags": ["OpenAI"],
            "summary": summary,
            "description": "A response stored by this instance (`store`, default true; bounded, least recently "
            "used first out). An unknown ID is a 404 in OpenAI's envelope.",
            "operationId": operation_id,
            "parameters": parameters,
            "responses": {
                "200": {"description": answer, "content": JSON_ONLY},
                **errors(400, 401, 404),
            },
        },
    )


def routes(engine: Engine) -> list[RawRoute]:
    """The surface's routes; one store per instance (per engine)."""
    store = Store()
    engine.memories.append(store)
    by_id = "/v1/responses/{response_id}"
    return [
        post(
            "/v1/responses",
            Generate(engine, ResponsesSurface(store)),
            CreateResponse,
            tag="OpenAI",
            summary="Create a model response",
            operation_id="create_response",
            description="OpenAI's Responses API: text, function calls, structured output, "
            "`previous_response_id` (this instance's store) and reasoning items for reasoning models; the "
            "answer's text, timing, faults and limits follow the instance's settings (`/llmsim/config`).",
            answer='A `response`; with `"stream": true` OpenAI\'s typed events, `response.created` to '
            "`response.completed` (`response.incomplete` when `max_output_tokens` cut it).",
            statuses=(400, 401, 404, 413, 429, 500, 503, 504),
        ),
        post(
            "/v1/responses/input_tokens",
            InputTokens(engine, store),
            InputTokensRequest,
            tag="OpenAI",
            summary="Count the input tokens of a response",
            operation_id="count_response_input_tokens",
            description="The input tokens `POST /v1/responses` would bill for the same input (earlier turns "
            "of `previous_response_id` included). Auth applies; faults and rate limits do not.",
            answer='`{"object": "response.input_tokens", "input_tokens": N}`',
            statuses=(400, 401, 404, 413),
            content=JSON_ONLY,
        ),
        _read_route(
            by_id,
            StoredResponses(engine, store, "get"),
            "GET",
            "get_response",
            "Get a model response",
            "The `response`.",
        ),
        _read_route(
            by_id,
            StoredResponses(engine, store, "delete"),
            "DELETE",
            "delete_response",
            "Delete a model response",
            '`{"id": …, "object": "response", "deleted": true}`',
        ),
        _read_route(
            by_id + "/input_items",
            StoredResponses(engine, store, "items"),
            "GET",
            "list_response_input_items",
            "List a response's input items",
            "A `list` of the response's input items (`ResponseItemList`), newest first unless `order=asc`.",
            query=True,
        ),
    ]
