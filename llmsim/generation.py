"""The neutral middle of the pipeline: a surface-independent request and its generated result.

Surfaces (OpenAI chat today) translate their wire format into :class:`GenerationRequest` and
render :class:`Generation` back; everything between is written once here.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from llmsim import tokens

if TYPE_CHECKING:
    from llmsim.content import Content


# Without max_tokens an answer ends here ("length"), as gpt-4o's do at its output limit.
DEFAULT_MAX_TOKENS = 16_384


# --- exact usage (x-llmsim-usage, a script rule's ``usage``) ---------------------------------------

USAGE_KEYS = ("prompt", "completion", "cached", "reasoning")
# The largest numbers an override may report: a 10M-token prompt costs nothing (it is a number);
# completion tokens are generated (visible ones at most MAX_VISIBLE_TOKENS, the rest is reasoning).
MAX_USAGE_PROMPT = 10_000_000
MAX_USAGE_COMPLETION = 131_072  # gpt-5's largest output
MAX_VISIBLE_TOKENS = 65_536  # as x-llmsim-output-tokens


@dataclass(frozen=True, slots=True)
class UsageOverride:
    """Usage a request reports exactly, on every surface; None: the simulated value.

    ``prompt`` is every input token (Anthropic's ``input_tokens`` is ``prompt - cached``),
    ``completion`` includes ``reasoning``; the visible answer is made ``completion - reasoning``
    tokens long where the content allows it (filler, echo and fixed text; not tool calls, JSON or a
    script's text), so a stream sends what the usage says. A missing key keeps the simulated
    value, kept consistent with the given ones (cached <= prompt, reasoning <= completion).
    """

    prompt: int | None = None
    completion: int | None = None
    cached: int | None = None
    reasoning: int | None = None


def check_usage(usage: UsageOverride) -> str | None:
    """What is wrong with an override's numbers (None: nothing)."""
    for key, largest in zip(USAGE_KEYS, (MAX_USAGE_PROMPT, MAX_USAGE_COMPLETION) * 2, strict=True):
        value = getattr(usage, key)
        if value is not None and not 0 <= value <= largest:
            return f"{key} must be an integer from 0 to {largest:,}, got {value}"
    if usage.cached is not None and usage.prompt is not None and usage.cached > usage.prompt:
        return f"cached ({usage.cached}) must not exceed prompt ({usage.prompt})"
    if usage.reasoning is not None and usage.completion is not None and usage.reasoning > usage.completion:
        return f"reasoning ({usage.reasoning}) must not exceed completion ({usage.completion})"
    return None


def parse_usage(value: str) -> UsageOverride:
    """``prompt=1200,completion=40,cached=1024,reasoning=0`` (any non-empty subset of the keys, each
    once); raises ValueError saying what is wrong, for a 400 naming the header."""
    numbers: dict[str, int] = {}
    for item in value[:256].split(","):
        key, sep, number = item.strip().partition("=")
        key, number = key.strip(), number.strip()
        if not sep or key not in USAGE_KEYS:
            raise ValueError(
                f"expected key=value pairs with keys {', '.join(USAGE_KEYS)}, got {item.strip()[:40]!r}"
            )
        if key in numbers:
            raise ValueError(f"{key} is given twice")
        if not number.isascii() or not number.isdigit() or len(number) > 9:
            raise ValueError(f"{key} must be a non-negative integer, got {number[:40]!r}")
        numbers[key] = int(number)
    if len(value) > 256:
        raise ValueError("the value is too long")
    usage = UsageOverride(**numbers)
    problem = check_usage(usage)
    if problem is not None:
        raise ValueError(problem)
    return usage


def _split(total: int, parts: int) -> list[int]:
    """``total`` shared by ``parts`` choices, the first ones one more when it does not divide."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


# --- reasoning models --------------------------------------------------------------------------

# Models that think before they answer (by name prefix; the ``-chat`` variants do not).
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
# Hidden reasoning tokens a choice spends, by effort: a multiple of a draw from REASONING_LOW
# (deterministic for a seed). low 64-256, medium 256-1,024, high 1,024-4,096, each 4x the one
# below, in the range OpenAI's o-series and gpt-5 report for short prompts; none and minimal
# (gpt-5) reason not at all. Unknown or absent: medium, OpenAI's default. Reasoning counts
# against max_tokens (max_completion_tokens), as OpenAI's does: what it leaves is the visible
# budget, and a choice that reasons it all away answers nothing, finishing with "length".
REASONING_EFFORTS = {"none": 0, "minimal": 0, "low": 1, "medium": 4, "high": 16, "xhigh": 32, "max": 64}
REASONING_LOW = (64, 256)


def reasons(model: str) -> bool:
    return model.startswith(REASONING_MODELS) and "-chat" not in model


def reasoning_tokens(request: GenerationRequest, index: int) -> int:
    """Hidden reasoning tokens of choice ``index`` (0 for a model that does not reason)."""
    if not reasons(request.model):
        return 0
    factor = REASONING_EFFORTS.get(request.reasoning_effort or "medium", 4)
    if not factor:
        return 0
    seed = request.seed
    rng: Any = random.Random(f"{seed}:{index}:reasoning") if seed is not None else random
    return rng.randint(*REASONING_LOW) * factor


# --- OpenAI's automatic prompt caching ----------------------------------------------------------

CACHE_MIN_TOKENS = 1024  # a shorter prefix is never cached
CACHE_STEP = 128  # cached_tokens come in steps of this: 1024, 1152, ...
CACHE_ENTRIES = 8192  # prefixes remembered per instance (an LRU: ~1 MiB at most)
PREFIXES_PER_REQUEST = 64  # prefixes one request stores (the first and last halves of its list)


class PromptCache:
    """The prefixes this instance has prefilled (bounded LRU), as OpenAI's automatic prompt cache:
    a request whose prompt starts with one reports it in ``prompt_tokens_details.cached_tokens``,
    and its prefill only pays for the uncached rest.

    A prefix is a key (a hash chain over the model and the messages up to a message boundary) and
    its tokens rounded down to a CACHE_STEP, when that reaches CACHE_MIN_TOKENS (prompt_prefixes).
    Why message boundaries, not 128-token blocks of token IDs: ``tokens`` counts text with a
    per-text cache of counts, never keeping the IDs, so hashing token blocks would encode every
    prompt a second time; the boundaries reuse the counts the request pays for anyway, and the
    hashing is one pass over the texts (Python's string hash, computed once per string). The
    difference from OpenAI: a prefix shared only within a message (two prompts whose one long
    message differs at its end) is not a hit. Tools and response formats are not part of the key.

    Lookups may come from worker threads (large prompts): a lock guards the dict.
    """

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._seen: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, prefixes: Sequence[tuple[int, int]]) -> int:
        """Cached tokens of the longest prefix seen before (0: none)."""
        if not prefixes:
            return 0
        seen = self._seen
        with self._lock:
            for key, cached in reversed(prefixes):
                if key in seen:
                    seen.move_to_end(key)
                    return cached
        return 0

    def store(self, prefixes: Sequence[tuple[int, int]]) -> None:
        if not prefixes:
            return
        seen = self._seen
        with self._lock:
            for key, cached in prefixes:
                seen[key] = cached
                seen.move_to_end(key)
            while len(seen) > self.size:
                seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def prompt_prefixes(
    tokenizer: tokens.Tokenizer, model: str, messages: Sequence[PromptMessage]
) -> tuple[int, list[tuple[int, int]]]:
    """count_prompt's count, and the prompt's cacheable prefixes: (key, cached tokens), shortest
    first, one per CACHE_STEP reached (the first message boundary to reach it), at most
    PREFIXES_PER_REQUEST of them."""
    count = tokenizer.count
    total = tokens.REPLY_PRIMING  # the reply's priming comes after the messages: never a prefix
    key = hash(model)
    found: list[tuple[int, int]] = []
    reached = CACHE_MIN_TOKENS - 1
    for message in messages:
        total += message_tokens(count, message)
        key = hash((key, message.role, message.name, message.images, message.texts))
        cached = (total - tokens.REPLY_PRIMING) // CACHE_STEP * CACHE_STEP
        if cached > reached:
            found.append((key, cached))
            reached = cached
    if len(found) > PREFIXES_PER_REQUEST:
        half = PREFIXES_PER_REQUEST // 2
        found = found[:half] + found[-half:]
    return total, found


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
    # Hidden reasoning of a reasoning model (REASONING_EFFORTS; None: the provider's default,
    # medium): chat's ``reasoning_effort``, Responses' ``reasoning.effort``.
    reasoning_effort: str | None = None
    usage: UsageOverride | None = None  # exact usage to report (x-llmsim-usage), set by the engine
    # OpenAI's automatic prompt caching (PromptCache); Anthropic caches only what cache_control marks.
    auto_prompt_cache: bool = True

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
    reasoning: int = 0  # hidden reasoning tokens before the answer (not in ``tokens``)
    tokens: int = field(init=False)  # visible completion tokens of this choice (generation steps)

    def __post_init__(self) -> None:
        self.tokens = len(self.pieces) + sum(len(call.pieces) for call in self.tool_calls)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class Generation:
    """The result, with the usage every surface reports: each number is final here (a surface
    renders them, never recomputes them)."""

    choices: Sequence[Choice]
    prompt_tokens: int
    # Usage details, on surfaces that report them (0: none): prompt tokens read from this instance's
    # prompt cache (PromptCache), and hidden reasoning tokens (counted in completion_tokens too).
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Visible tokens of every choice plus the reasoning tokens, as OpenAI bills them; -1: computed.
    completion_tokens: int = -1
    exact: bool = False  # the usage is an override's (x-llmsim-usage, a script rule): report it as is
    # This prompt's prefixes for the instance's prompt cache, stored once the request is admitted.
    prefixes: Sequence[tuple[int, int]] = ()

    def __post_init__(self) -> None:
        if self.completion_tokens < 0:
            self.completion_tokens = sum(choice.tokens for choice in self.choices) + self.reasoning_tokens

    @property
    def longest(self) -> int:
        """Tokens in the longest choice: the number of generation steps the request takes."""
        return max(choice.tokens for choice in self.choices)

    @property
    def reasoning_steps(self) -> int:
        """The longest hidden reasoning: generated before the first visible token (choices reason
        side by side), so the latency plan adds it to the time to first token."""
        return max((choice.reasoning for choice in self.choices), default=0)


def message_tokens(count: Callable[[str], int], message: PromptMessage) -> int:
    """One message's prompt tokens as OpenAI bills a chat request (the cookbook's overhead)."""
    total = tokens.TOKENS_PER_MESSAGE + count(message.role)
    for text in message.texts:
        total += count(text)
    if message.name:
        total += tokens.TOKENS_PER_NAME + count(message.name)
    return total + tokens.IMAGE_TOKENS * message.images


def count_prompt(tokenizer: tokens.Tokenizer, messages: Sequence[PromptMessage]) -> int:
    """Prompt tokens as OpenAI bills a chat request: its messages and the reply's priming."""
    count = tokenizer.count
    return tokens.REPLY_PRIMING + sum(message_tokens(count, message) for message in messages)


def _cut(
    request: GenerationRequest, tokenizer: tokens.Tokenizer, choice: Choice, reasoning: int = 0
) -> Choice:
    """Apply ``stop`` (text only, as OpenAI does) and ``max_tokens`` to a drafted answer, of which
    ``reasoning`` tokens were spent thinking."""
    pieces = choice.pieces
    hit = None
    if request.stop and pieces:
        text = "".join(pieces)
        cuts = [(i, s) for s in request.stop if (i := text.find(s)) >= 0]
        if cuts:
            at, hit = min(cuts)
            pieces = tokenizer.pieces(text[:at])
    if request.max_tokens:
        budget = limit = max(0, request.max_tokens - reasoning)
    else:
        budget = limit = request.output_tokens or max(0, DEFAULT_MAX_TOKENS - reasoning)
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


def generate(request: GenerationRequest, content: Content, cache: PromptCache | None = None) -> Generation:
    """The choices and their usage: prompt tokens (read from ``cache``, the instance's prompt
    cache, when the surface caches automatically), reasoning, and an override's exact numbers
    (the request's x-llmsim-usage, else a script rule's ``usage``)."""
    tokenizer = tokens.for_model(request.model)
    n = request.n
    if n > 1:
        tokenizer = tokens.Memo(tokenizer)
    answer = content.answer(request)
    usage = request.usage if request.usage is not None else answer.usage if answer is not None else None
    budget = request.max_tokens or DEFAULT_MAX_TOKENS
    thinking = [min(reasoning_tokens(request, index), budget) for index in range(n)]
    visible: list[int | None] = [None] * n
    if usage is not None:
        if usage.reasoning is not None:
            thinking = _split(usage.reasoning, n)
        elif usage.completion is not None and sum(thinking) > usage.completion:
            thinking = _split(usage.completion, n)
        if usage.completion is not None:
            visible = [min(v, MAX_VISIBLE_TOKENS) for v in _split(usage.completion - sum(thinking), n)]
    # Filler, echo and fixed text take the override's length; a script's answer, tool calls and
    # JSON stay whole (cut, they would not be what was asked for), and only max_tokens cuts them.
    shaped = answer is None and request.json_schema is None and not request.json_object
    drafts: dict[int | None, GenerationRequest] = {None: request}
    choices = []
    for index in range(n):
        wanted = visible[index]
        drafting = drafts.get(wanted)
        if drafting is None:  # the exact visible length, as x-llmsim-output-tokens asks for one
            drafting = drafts[wanted] = replace(request, output_tokens=wanted or None)
        choice = content.draft(drafting, tokenizer, index, answer)
        fits = shaped and not choice.tool_calls
        if wanted == 0 and fits:
            choice = Choice(index, [], choice.finish_reason)
        choice = _cut(drafting if fits else request, tokenizer, choice, thinking[index])
        choice.reasoning = thinking[index]
        choices.append(choice)
    prefixes: list[tuple[int, int]] = []
    if cache is not None and request.auto_prompt_cache:
        prompt, prefixes = prompt_prefixes(tokenizer, request.model, request.messages)
        cached = cache.lookup(prefixes)
    else:
        prompt, cached = count_prompt(tokenizer, request.messages), 0
    reasoning = sum(thinking)
    if usage is None:
        return Generation(choices, prompt, cached, reasoning, prefixes=prefixes)
    if usage.prompt is not None:
        prompt = usage.prompt
    cached = usage.cached if usage.cached is not None else min(cached, prompt)
    completion = usage.completion if usage.completion is not None else -1
    return Generation(choices, max(prompt, cached), cached, reasoning, completion, True, prefixes)
