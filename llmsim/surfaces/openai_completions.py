"""OpenAI's legacy ``/v1/completions`` (gpt-3.5-turbo-instruct, davinci-002, babbage-002).

Each prompt of a request gets its own choices (``n`` a prompt; choice ``index`` is
``prompt_index * n + i``), so one request is several generations: the route's endpoint
(:class:`Complete`) drafts each prompt's answers with the shared content and generation code, then
goes through the Engine's admission stage and its pacing exactly as
:class:`~llmsim.surfaces.endpoint.Generate` does. The wire format is :class:`CompletionsSurface`
(module instance :data:`COMPLETIONS`), which another path (Azure's deployments) can reuse with the
model taken from its URL.

Usage is OpenAI's for this endpoint: prompt tokens are the prompts' own tokens (no chat framing),
and completion tokens count every ``best_of`` candidate, as OpenAI bills them.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Any

import orjson
from pydantic import Field, WithJsonSchema
from starlette.types import Receive, Scope, Send

from llmsim import tokens
from llmsim.content import Content
from llmsim.engine import Engine, Turn
from llmsim.errors import APIError
from llmsim.generation import Choice, Finish, Generation, GenerationRequest, PromptMessage, generate
from llmsim.surfaces.base import SSE_HEADERS, random_id
from llmsim.surfaces.endpoint import CountingEndpoint, Reply, answer
from llmsim.surfaces.openai_fields import Int, Model, StreamOptions, check_stream_options, read_model_body
from llmsim.surfaces.routes import RawRoute, post
from llmsim.surfaces.validation import type_name

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_PROMPTS = 2048
# llmsim's bound on the answers one request drafts (prompts × best_of): far above real use.
MAX_CHOICES = 2048
# Context windows (prompt + max_tokens) of the legacy models, as OpenAI states them in its errors.
CONTEXT = {"gpt-3.5-turbo-instruct": 4097, "davinci-002": 16384, "babbage-002": 16384}
# Chat (and embedding) models are refused here, as OpenAI refuses them; other names are served.
_CHAT = ("gpt-4", "gpt-3.5-turbo", "gpt-5", "chatgpt-", "o1", "o3", "o4", "claude")
_EMBEDDING = ("text-embedding-",)
VOCABULARY_OF = "gpt-3.5-turbo-instruct"  # the legacy models all count with cl100k_base


_PROMPT_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "maxItems": MAX_PROMPTS, "items": {"type": "string"}},
        {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PROMPTS,
            "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        },
    ],
    "description": "A string, an array of strings, an array of token IDs, or an array of such arrays.",
}


class CompletionRequest(Model):
    model: str | None = None  # required, with OpenAI's own message (a path may name the model)
    # Checked by hand (_prompts): a union's errors would name the wrong alternative.
    prompt: Annotated[Any, WithJsonSchema(_PROMPT_SCHEMA)] = "<|endoftext|>"
    max_tokens: Int | None = Field(None, ge=0)
    n: Int | None = Field(None, ge=1, le=128)
    best_of: Int | None = Field(None, ge=0, le=20)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: Int | None = Field(None, ge=0, le=5)
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
    user: str | None = None


@dataclass(slots=True)
class CompletionJob:
    """A parsed request: one neutral request a prompt (each with ``best_of`` choices)."""

    body: CompletionRequest
    model: str
    prompts: list[str]  # each prompt's text (token arrays decoded)
    prompt_tokens: list[int]  # each prompt's own token count
    requests: list[GenerationRequest]
    n: int
    best_of: int
    max_tokens: int


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid_prompt(detail: str, code: str = "invalid_value") -> APIError:
    return APIError(400, detail, "prompt", code)


def _prompts(value: Any) -> list[str | list[int]]:
    """``prompt`` as a list of strings and token arrays, in OpenAI's shapes."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _invalid_prompt(
            "Invalid type for 'prompt': expected one of a string, an array of strings, an array of "
            f"integers, or an array of arrays of integers, but got {type_name(value)} instead.",
            "invalid_type",
        )
    if not value:
        return [""]  # as an empty prompt
    if all(map(_is_token, value)):
        return [value]
    if len(value) > MAX_PROMPTS:
        raise _invalid_prompt(
            f"Invalid 'prompt': array too long. Expected an array with maximum length {MAX_PROMPTS}, but got "
            f"an array with length {len(value)} instead.",
            "array_above_max_length",
        )
    if all(isinstance(item, str) for item in value):
        return value
    if all(isinstance(item, list) and item and all(map(_is_token, item)) for item in value):
        return value
    raise _invalid_prompt(
        "Invalid 'prompt': expected a string, an array of strings, an array of integers, or an array of "
        "arrays of integers."
    )


def _text_and_count(item: str | list[int], tokenizer: tokens.Tokenizer) -> tuple[str, int]:
    if isinstance(item, str):
        return item, tokenizer.count(item)
    encoding = getattr(tokenizer, "encoding", None)
    if encoding is None:  # a model without a known vocabulary: the IDs stand for themselves
        return " ".join(map(str, item)), len(item)
    try:
        return encoding.decode_bytes(item).decode("utf-8", errors="replace"), len(item)
    except (KeyError, ValueError, OverflowError, TypeError):  # an ID outside the vocabulary
        raise _invalid_prompt("Invalid 'prompt': a token ID is not in the model's vocabulary.") from None


def check_model(model: str) -> None:
    """OpenAI's refusal of a model this endpoint does not serve (a configured one)."""
    if model.startswith(_CHAT) and not model.startswith("gpt-3.5-turbo-instruct"):
        raise APIError(
            404,
            "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use "
            "v1/chat/completions?",
            "model",
        )
    if model.startswith(_EMBEDDING):
        raise APIError(404, "This model does not support the v1/completions endpoint.", "model")


def _context(model: str) -> int | None:
    return next((size for name, size in CONTEXT.items() if model.startswith(name)), None)


# --- rendering -----------------------------------------------------------------------------------


def completion_id() -> str:
    return random_id("cmpl-", 29)


# Alternatives offered in top_logprobs, always less likely than the token that was "chosen".
_ALTERNATIVES = (" the", ",", " and", ".", " a", " of")


def _token_logprob(piece: str) -> float:
    """A plausible, deterministic log probability for a token."""
    return -(zlib.crc32(piece.encode()) % 700) / 1000


def _top(piece: str, logprob: float, top: int) -> dict[str, float]:
    if not top:
        return {}
    alternatives = [a for a in _ALTERNATIVES if a != piece][: top - 1]
    return {piece: logprob} | {alt: round(logprob - 1.5 - 0.7 * k, 4) for k, alt in enumerate(alternatives)}


def logprobs_of(pieces: list[str], offset: int, top: int, prompt: list[str] | None = None) -> dict[str, Any]:
    """OpenAI's legacy logprobs object for ``pieces`` starting at character ``offset``, after an
    echoed ``prompt``'s tokens (from character 0). OpenAI gives the first prompt token a null log
    probability, which its own published schema does not allow: here it gets one like the others."""
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    position = 0 if prompt is not None else offset
    for piece in [*(prompt or ()), *pieces]:
        logprob = _token_logprob(piece)
        out["tokens"].append(piece)
        out["token_logprobs"].append(logprob)
        out["top_logprobs"].append(_top(piece, logprob, top))
        out["text_offset"].append(position)
        position += len(piece)
    return out


FINISH_REASONS = {Finish.STOP: "stop", Finish.LENGTH: "length", Finish.TOOL_CALL: "stop"}


def _usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


class CompletionsSurface:
    """OpenAI's legacy completions wire format: parse a body into a :class:`CompletionJob`, and
    answer its generation (all prompts' ``best_of`` candidates, in prompt order) as a body or events."""

    wire = None  # OpenAI's envelope and headers

    def parse(self, raw: bytes, models: frozenset[str], model: str | None = None) -> CompletionJob:
        """``model`` (a deployment in a path) replaces the body's."""
        body, model = read_model_body(CompletionRequest, raw, models, model)
        check_model(model)
        check_stream_options(body.stream_options, body.stream)
        n = body.n or 1
        best_of = body.best_of or n
        if best_of < n:
            raise APIError(
                400,
                f"Invalid value for 'best_of': {best_of} is less than 'n' ({n}); best_of must be greater "
                "than or equal to n.",
                "best_of",
                "invalid_value",
            )
        if body.stream and best_of > n:
            raise APIError(
                400,
                "Invalid value for 'best_of': results cannot be streamed when 'best_of' is greater than 'n'.",
                "best_of",
                "invalid_value",
            )
        items = _prompts(body.prompt)
        if len(items) * best_of > MAX_CHOICES:
            raise APIError(
                400,
                f"Too many completions: {len(items)} prompts × {best_of} ('best_of' or 'n'); llmsim drafts at "
                f"most {MAX_CHOICES} in one request.",
                "n",
                "invalid_value",
            )
        max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
        tokenizer = tokens.for_model(model)
        context = _context(model)
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(s for s in body.stop or () if s)
        texts, counts, requests = [], [], []
        for item in items:
            text, count = _text_and_count(item, tokenizer)
            if context is not None and count + max_tokens > context:
                raise APIError(
                    400,
                    f"This model's maximum context length is {context} tokens, however you requested "
                    f"{count + max_tokens} tokens ({count} in your prompt; {max_tokens} for the completion). "
                    "Please reduce your prompt; or completion length.",
                )
            texts.append(text)
            counts.append(count)
            requests.append(
                GenerationRequest(
                    model=model,
                    messages=[PromptMessage("user", (text,))],
                    n=best_of,
                    max_tokens=max_tokens,
                    stop=stop,
                    seed=body.seed,
                    stream=bool(body.stream),
                )
            )
        return CompletionJob(body, model, texts, counts, requests, n, best_of, max_tokens)

    def reply(self, job: CompletionJob, generation: Generation, turn: Turn, instance: str) -> Reply:
        if job.body.stream:
            options = job.body.stream_options
            events = self.render_stream(job, generation, instance, bool(options and options.include_usage))
            return Reply(events=events, headers=SSE_HEADERS)
        return Reply(self.render(job, generation, instance))

    @staticmethod
    def _returned(job: CompletionJob, generation: Generation) -> Iterator[tuple[int, int, Choice]]:
        """(prompt index, output index, choice) of the choices returned: each prompt's first n of
        its best_of candidates."""
        for p in range(len(job.prompts)):
            for i in range(job.n):
                yield p, p * job.n + i, generation.choices[p * job.best_of + i]

    def _pieces(self, job: CompletionJob, p: int) -> list[str]:
        return tokens.for_model(job.model).pieces(job.prompts[p])

    def render(self, job: CompletionJob, generation: Generation, instance: str) -> bytes:
        body = job.body
        choices = []
        for p, index, choice in self._returned(job, generation):
            prompt = job.prompts[p]
            text = prompt + choice.text if body.echo else choice.text
            logprobs = None
            if body.logprobs is not None:
                echoed = self._pieces(job, p) if body.echo else None
                logprobs = logprobs_of(list(choice.pieces), len(prompt), body.logprobs, echoed)
            choices.append(
                {
                    "text": text,
                    "index": index,
                    "logprobs": logprobs,
                    "finish_reason": FINISH_REASONS[choice.finish_reason],
                }
            )
        return orjson.dumps(
            {
                "id": completion_id(),
                "object": "text_completion",
                "created": int(time.time()),
                "model": job.model,
                "system_fingerprint": instance,
                "choices": choices,
                "usage": _usage(generation),
            }
        )

    def render_stream(
        self, job: CompletionJob, generation: Generation, instance: str, include_usage: bool
    ) -> Iterator[tuple[int, bytes]]:
        """``text_completion`` chunks as OpenAI streams them: one token a chunk, interleaved across
        choices, an echoed prompt first, a finish chunk per choice, the optional usage chunk (empty
        choices), then ``[DONE]``; each with the generation step the Engine paces it by."""
        body = job.body
        envelope = orjson.dumps(
            {
                "id": completion_id(),
                "object": "text_completion",
                "created": int(time.time()),
                "model": job.model,
                "system_fingerprint": instance,
                "choices": [],
            }
        )
        head, tail = envelope.split(b'"choices":[]', 1)
        head = b"data: " + head + b'"choices":['
        tail = b"]" + tail + b"\n\n"
        dumps = orjson.dumps

        def chunk(index: int, text: str, logprobs: Any = None, finish: str | None = None) -> bytes:
            choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
            return head + dumps(choice) + tail

        returned = list(self._returned(job, generation))
        steps: list[tuple[int, int, bytes]] = []
        for p, index, choice in returned:
            prompt = job.prompts[p]
            if body.echo and prompt:
                logprobs = None
                if body.logprobs is not None:
                    logprobs = logprobs_of([], 0, body.logprobs, self._pieces(job, p))
                steps.append((0, index, chunk(index, prompt, logprobs)))
            offset = len(prompt)
            for position, piece in enumerate(choice.pieces):
                logprobs = None if body.logprobs is None else logprobs_of([piece], offset, body.logprobs)
                offset += len(piece)
                steps.append((position, index, chunk(index, piece, logprobs)))
        steps.sort(key=lambda step: (step[0], step[1]))  # interleaved, stable: the echo first
        for position, _, event in steps:
            yield position, event
        last = max(0, generation.longest - 1)
        for _, index, choice in returned:
            yield last, chunk(index, "", None, FINISH_REASONS[choice.finish_reason])
        if include_usage:
            usage = envelope[:-1] + b',"usage":' + dumps(_usage(generation)) + b"}"
            yield last, b"data: " + usage + b"\n\n"
        yield last, b"data: [DONE]\n\n"


COMPLETIONS = CompletionsSurface()


def draft(job: CompletionJob, content: Content, prepared: GenerationRequest) -> Generation:
    """Every prompt's ``best_of`` answers, in one Generation (choice p * best_of + j), billed as
    OpenAI bills this endpoint: the prompts' own tokens, and every candidate's tokens.

    ``prepared`` is the job's request as the Engine prepared it: its overrides (output length,
    script headers, exact usage) apply to every prompt; an exact usage is the whole request's."""
    choices: list[Choice] = []
    for p, request in enumerate(job.requests):
        if job.max_tokens == 0:  # nothing to generate: every answer ends at once
            drafted = [Choice(j, [], Finish.LENGTH) for j in range(job.best_of)]
        else:
            request = replace(request, output_tokens=prepared.output_tokens, headers=prepared.headers)
            drafted = list(generate(request, content).choices)
        for choice in drafted:
            index = p * job.best_of + choice.index
            choices.append(
                Choice(index, choice.pieces, choice.finish_reason, choice.tool_calls, choice.stop_sequence)
            )
    prompt, usage = sum(job.prompt_tokens), prepared.usage
    if usage is None:
        return Generation(choices, prompt)
    prompt = usage.prompt if usage.prompt is not None else prompt
    cached = min(usage.cached or 0, prompt)
    completion = usage.completion if usage.completion is not None else -1
    return Generation(choices, prompt, cached, 0, completion, True)


class Complete(CountingEndpoint):
    """The completions route as a plain ASGI endpoint: the lifecycle of
    :class:`~llmsim.surfaces.endpoint.Generate` (auth, the body, the trace, parsing big bodies off the
    loop, content and usage, admission, pacing, freeing the slot), drafting one generation a prompt.

    ``model_from`` names the model from the request's scope (a path parameter) instead of the body.
    """

    vocabulary = VOCABULARY_OF
    default = COMPLETIONS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine, handler = self.engine, self.handler
        turn = engine.admit(scope)
        job = await self.parsed(scope, receive)
        try:
            # The Engine sees the job as one request: every prompt, n = every candidate (its
            # rate-limit estimate and its choice of a worker thread), and drafts it here.
            whole = GenerationRequest(
                job.model,
                [PromptMessage("user", tuple(job.prompts))],
                n=job.best_of * len(job.prompts),
                max_tokens=job.max_tokens,
                stream=bool(job.body.stream),
                output_tokens=job.requests[0].output_tokens,
                auto_prompt_cache=False,
            )
            content = engine.content
            generation = await engine.begin(
                scope, receive, turn, whole, lambda prepared: draft(job, content, prepared)
            )
            await answer(engine, turn, send, handler.reply(job, generation, turn, engine.instance_id))
        finally:
            engine.end(turn)


def routes(engine: Engine) -> list[RawRoute]:
    return [
        post(
            "/v1/completions",
            Complete(engine),
            CompletionRequest,
            tag="OpenAI",
            summary="Create a completion (legacy)",
            operation_id="create_completion",
            description="OpenAI's legacy completions (gpt-3.5-turbo-instruct, davinci-002, babbage-002): "
            "one or several prompts (strings or token arrays), `n` and `best_of`, `echo`, `suffix`, "
            "`logprobs` (0-5, the legacy object), `stop`; the answer's text, timing, faults and limits "
            "follow the instance's settings (`/llmsim/config`).",
            answer='A `text_completion`; with `"stream": true` an event stream of `text_completion` chunks '
            "ending in `data: [DONE]`.",
            statuses=(400, 401, 404, 413, 429, 500, 503, 504),
        )
    ]
