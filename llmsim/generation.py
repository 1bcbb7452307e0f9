"""The neutral middle of the pipeline: a surface-independent request and its generated result.

Surfaces (OpenAI chat today) translate their wire format into :class:`GenerationRequest` and
render :class:`Generation` back; everything between is written once here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from llmsim import tokens

if TYPE_CHECKING:
    from llmsim.content import Content


# Without max_tokens an answer ends here ("length"), as gpt-4o's do at its output limit.
DEFAULT_MAX_TOKENS = 16_384


@dataclass(slots=True)
class PromptMessage:
    role: str
    texts: tuple[str, ...]  # everything in the message that is billed as text
    name: str | None = None
    images: int = 0


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, Any]


@dataclass(slots=True)
class GenerationRequest:
    model: str
    messages: Sequence[PromptMessage]
    n: int = 1
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    output_tokens: int | None = None  # exact completion length (x-llmsim-output-tokens)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"  # none | auto | required | function:<name>
    parallel_tool_calls: bool = True
    json_schema: Mapping[str, Any] | None = None  # response_format json_schema: content must match
    json_object: bool = False  # response_format json_object: content must be JSON
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased, for scripted rules

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return "".join(message.texts)
        return "".join(self.messages[-1].texts) if self.messages else ""


class Finish(StrEnum):
    """Why a choice ended, in the engine's words (also the metrics' labels, as vLLM names them);
    each surface names it its own way (OpenAI ``tool_calls``, Anthropic ``end_turn`` …)."""

    STOP = "stop"  # the answer ended, or reached a stop sequence (Choice.stop_sequence)
    LENGTH = "length"  # the token budget (max_tokens) ran out
    TOOL_CALL = "tool_call"  # the answer is tool calls


@dataclass(slots=True)
class ToolCall:
    """A call as a value: surfaces mint their own IDs from ``key`` (OpenAI ``call_``+key, Anthropic
    ``toolu_01``…) and serialise ``arguments`` themselves; ``pieces`` are the compact JSON of the
    arguments as tokens, for streams and usage (cut short by max_tokens: then ``complete`` is False)."""

    key: str  # 24 random letters and digits, stable for the call
    name: str
    arguments: Any
    pieces: Sequence[str]
    complete: bool = True

    @property
    def json(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class Choice:
    index: int
    pieces: Sequence[str]  # one entry per completion token, as a stream would send them
    finish_reason: Finish
    tool_calls: Sequence[ToolCall] = ()
    stop_sequence: str | None = None  # the stop string that ended the answer, if one did
    tokens: int = field(init=False)  # completion tokens of this choice

    def __post_init__(self) -> None:
        self.tokens = len(self.pieces) + sum(len(call.pieces) for call in self.tool_calls)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class Generation:
    choices: Sequence[Choice]
    prompt_tokens: int
    # Usage details, on surfaces that report them (0: none): prompt tokens read from this instance's
    # prompt cache, and hidden reasoning tokens (counted in completion_tokens as well).
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(choice.tokens for choice in self.choices)

    @property
    def longest(self) -> int:
        """Tokens in the longest choice: the number of generation steps the request takes."""
        return max(choice.tokens for choice in self.choices)


def count_prompt(tokenizer: tokens.Tokenizer, messages: Sequence[PromptMessage]) -> int:
    """Prompt tokens as OpenAI bills a chat request (the cookbook's per-message overhead)."""
    count = tokenizer.count
    total = tokens.REPLY_PRIMING
    for message in messages:
        total += tokens.TOKENS_PER_MESSAGE + count(message.role)
        for text in message.texts:
            total += count(text)
        if message.name:
            total += tokens.TOKENS_PER_NAME + count(message.name)
        total += tokens.IMAGE_TOKENS * message.images
    return total


def _cut(request: GenerationRequest, tokenizer: tokens.Tokenizer, choice: Choice) -> Choice:
    """Apply ``stop`` (text only, as OpenAI does) and ``max_tokens`` to a drafted answer."""
    pieces = choice.pieces
    hit = None
    if request.stop and pieces:
        text = "".join(pieces)
        cuts = [(i, s) for s in request.stop if (i := text.find(s)) >= 0]
        if cuts:
            at, hit = min(cuts)
            pieces = tokenizer.pieces(text[:at])
    budget = limit = request.max_tokens or request.output_tokens or DEFAULT_MAX_TOKENS
    if len(pieces) + sum(len(c.pieces) for c in choice.tool_calls) <= budget:
        return (
            choice
            if pieces is choice.pieces
            else Choice(choice.index, pieces, choice.finish_reason, choice.tool_calls, hit)
        )
    calls = []
    budget -= len(pieces[:budget])
    for call in choice.tool_calls:
        if budget <= 0:
            break
        kept = call.pieces[:budget]
        calls.append(ToolCall(call.key, call.name, call.arguments, kept, len(kept) == len(call.pieces)))
        budget -= len(call.pieces)
    return Choice(choice.index, pieces[:limit], Finish.LENGTH, calls)


def generate(request: GenerationRequest, content: Content) -> Generation:
    tokenizer = tokens.for_model(request.model)
    if request.n > 1:
        tokenizer = tokens.Memo(tokenizer)
    choices = [
        _cut(request, tokenizer, content.draft(request, tokenizer, index)) for index in range(request.n)
    ]
    return Generation(choices, count_prompt(tokenizer, request.messages))
