"""What the simulated model says: one function per response mode, deterministic from the seed."""

from __future__ import annotations

import random
import string
from types import EllipsisType
from typing import Any

import orjson

from llmsim import schema_values
from llmsim.errors import APIError, invalid_function_schema, invalid_response_schema
from llmsim.generation import DEFAULT_MAX_TOKENS, Choice, Finish, GenerationRequest, ToolCall
from llmsim.latency import Dist
from llmsim.script import Answer, Script
from llmsim.settings import ResponseMode, Settings
from llmsim.tokens import Tokenizer

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur excepteur sint occaecat cupidatat "
    "non proident sunt in culpa qui officia deserunt mollit anim id est laborum"
).split()


# An echo of at most N tokens quotes at most this many characters a token of the message: about
# four times a token's usual length, so the cut does not show in the answer, and no more is
# tokenized.
ECHO_CHARS_PER_TOKEN = 16


def echo(last_user_text: str, tokens: int) -> str:
    return f'You said: "{last_user_text[: (tokens + 1) * ECHO_CHARS_PER_TOKEN]}"'


def lorem(
    tokenizer: Tokenizer, tokens: int, seed: int | None, prompt: str, index: int, lead: str = ""
) -> list[str]:
    """Filler of exactly ``tokens`` tokens, as token pieces; the same seed, prompt and choice give
    the same text. Words are tokenized one at a time (with their leading space), which the
    tokenizer caches: the tokenizers split text at word boundaries first, so the pieces are those
    of the joined text, without running BPE over fresh random text on every request."""
    rng = random.Random(f"{seed}:{index}:{prompt}") if seed is not None else random
    pieces: list[str] = []
    sentence_start = True
    separator = lead
    while len(pieces) < tokens:  # every word is at least one token
        word = rng.choice(_LOREM)
        if sentence_start:
            word = word.capitalize()
        sentence_start = rng.random() < 0.12
        if sentence_start:
            word += "."
        pieces += tokenizer.pieces(separator + word)
        separator = " "
    return pieces[:tokens]


def output_length(settings: Settings, seed: int | None, index: int) -> int:
    """How many tokens lorem mode writes: --output-tokens, sampled from its distribution."""
    dist = Dist(settings.output_tokens, settings.output_tokens_stddev, settings.output_tokens_distribution)
    rng = random.Random(f"{seed}:{index}:length") if seed is not None else random
    return max(1, round(dist.sample(rng)))  # type: ignore[arg-type]


def pieces_for(
    settings: Settings,
    tokenizer: Tokenizer,
    last_user_text: str,
    seed: int | None,
    index: int,
    exact: int | None = None,
    most: int = DEFAULT_MAX_TOKENS,
) -> list[str]:
    """The answer as token pieces (one a stream chunk); ``exact`` forces the token count, padding
    with filler or cutting, for tests that need a known length."""
    mode = settings.response_mode
    if mode is ResponseMode.lorem:
        length = exact or output_length(settings, seed, index)
        return lorem(tokenizer, length, seed, last_user_text, index)
    text = settings.fixed_text if mode is ResponseMode.fixed else echo(last_user_text, exact or most)
    pieces = tokenizer.pieces(text)
    if exact is None or len(pieces) == exact:
        return pieces
    if len(pieces) > exact:
        return pieces[:exact]
    return pieces + lorem(tokenizer, exact - len(pieces), seed, last_user_text, index, lead=" ")


_ID_ALPHABET = string.ascii_letters + string.digits


def _call_key(rng: Any) -> str:
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(24))


class Content:
    """Decides what each choice says: a scripted answer, a tool call, JSON for a
    ``response_format``, or the response mode's text. Deterministic when the request has a seed.
    """

    def __init__(self, settings: Settings, script: Script | None = None) -> None:
        self.settings = settings
        self.script = script

    def answer(self, request: GenerationRequest) -> Answer | None:
        """The script's answer to the request (one for all its choices); None without a match."""
        if self.script is None:
            return None
        return self.script.answer(request.last_user_text, request.model, request.headers)

    def draft(
        self,
        request: GenerationRequest,
        tokenizer: Tokenizer,
        index: int,
        answer: Answer | None | EllipsisType = ...,
    ) -> Choice:
        """One choice; ``answer`` is the script's (:meth:`answer`), looked up here when not given."""
        seed = request.seed
        rng: Any = random.Random(f"{seed}:{index}:content") if seed is not None else random
        last_user = request.last_user_text
        if answer is ...:
            answer = self.answer(request)
        if answer is not None:
            return self._scripted(answer, tokenizer, index, rng)
        calls = self._tool_calls(request, tokenizer, rng)
        if calls:
            return Choice(index, [], Finish.TOOL_CALL, calls)
        if request.json_schema is not None or request.json_object:
            schema = request.json_schema if request.json_schema is not None else _ANY_OBJECT
            try:
                value = schema_values.generate(schema, rng, _budget(request.n))
            except schema_values.SchemaError as exc:  # the generation budget: the request's fault
                raise invalid_response_schema("", exc) from None
            return Choice(index, tokenizer.pieces(_json(value)), Finish.STOP)
        most = request.max_tokens or DEFAULT_MAX_TOKENS
        pieces = pieces_for(self.settings, tokenizer, last_user, seed, index, request.output_tokens, most)
        return Choice(index, pieces, Finish.STOP)

    def _tool_calls(self, request: GenerationRequest, tokenizer: Tokenizer, rng: Any) -> list[ToolCall]:
        choice = request.tool_choice
        if not request.tools or choice == "none":
            return []
        if choice.startswith("function:"):
            name = choice.removeprefix("function:")
            chosen = [t for t in request.tools if t.name == name][:1]
        elif choice == "required" or rng.random() < self.settings.tool_call_probability:
            count = rng.randint(1, min(2, len(request.tools))) if request.parallel_tool_calls else 1
            chosen = rng.sample(list(request.tools), count)
        else:
            return []
        budget = _budget(request.n * len(chosen))
        calls: list[ToolCall] = []
        for tool in chosen:
            try:
                arguments = schema_values.generate(tool.parameters or _ANY_OBJECT, rng, budget)
            except schema_values.SchemaError as exc:
                i = next(i for i, t in enumerate(request.tools) if t is tool)
                raise invalid_function_schema(tool.name, i, exc) from None
            calls.append(ToolCall(_call_key(rng), tool.name, arguments, tokenizer.pieces(_json(arguments))))
        return calls

    def _scripted(self, answer: Answer, tokenizer: Tokenizer, index: int, rng: Any) -> Choice:
        if answer.error is not None:
            error = answer.error
            raise APIError(error.status, error.message, code=error.code, type=error.type)
        if answer.tool_calls:
            calls = [
                ToolCall(_call_key(rng), call.name, call.arguments, tokenizer.pieces(_json(call.arguments)))
                for call in answer.tool_calls
            ]
            return Choice(index, [], Finish.TOOL_CALL, calls)
        return Choice(index, tokenizer.pieces(answer.text or ""), Finish.STOP)


# Each generated value gets its share of the request's budget, but never less than this: n=128
# choices of an ordinary schema must still work (the request runs in a worker thread).
MIN_VALUE_BUDGET = 5_000


def _budget(values: int) -> int:
    return max(MIN_VALUE_BUDGET, schema_values.GENERATION_BUDGET // max(1, values))


_ANY_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def _json(value: Any) -> str:
    """Compact, as OpenAI writes tool arguments and structured output."""
    return orjson.dumps(value).decode()
