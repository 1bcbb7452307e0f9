"""The neutral middle of the pipeline: a surface-independent request and its generated result.

Surfaces (OpenAI chat today) translate their wire format into :class:`GenerationRequest` and
render :class:`Generation` back; everything between is written once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmsim import content, tokens
from llmsim.settings import Settings


@dataclass(slots=True)
class PromptMessage:
    role: str
    texts: tuple[str, ...]  # everything in the message that is billed as text
    name: str | None = None
    images: int = 0


@dataclass(slots=True)
class GenerationRequest:
    model: str
    messages: Sequence[PromptMessage]
    n: int = 1
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    output_tokens: int | None = None  # exact completion length (x-llmsim-output-tokens)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return "".join(message.texts)
        return "".join(self.messages[-1].texts) if self.messages else ""


@dataclass(slots=True)
class Choice:
    index: int
    pieces: Sequence[str]  # one entry per completion token, as a stream would send them
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class Generation:
    choices: Sequence[Choice]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(len(choice.pieces) for choice in self.choices)

    @property
    def longest(self) -> int:
        """Tokens in the longest choice: the number of generation steps the request takes."""
        return max(len(choice.pieces) for choice in self.choices)


def count_prompt(tokenizer: tokens.Tokenizer, messages: Sequence[PromptMessage]) -> int:
    """Prompt tokens as OpenAI bills a chat request (the cookbook's per-message overhead)."""
    total = tokens.REPLY_PRIMING
    for message in messages:
        total += tokens.TOKENS_PER_MESSAGE + tokenizer.count(message.role)
        total += sum(tokenizer.count(text) for text in message.texts)
        if message.name:
            total += tokens.TOKENS_PER_NAME + tokenizer.count(message.name)
        total += tokens.IMAGE_TOKENS * message.images
    return total


def _choice(request: GenerationRequest, tokenizer: tokens.Tokenizer, pieces: list[str], index: int) -> Choice:
    finish = "stop"
    if request.stop:
        text = "".join(pieces)
        cuts = [i for i in (text.find(s) for s in request.stop) if i >= 0]
        if cuts:
            pieces = tokenizer.pieces(text[: min(cuts)])
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        pieces, finish = pieces[: request.max_tokens], "length"
    return Choice(index, pieces, finish)


def generate(request: GenerationRequest, settings: Settings) -> Generation:
    tokenizer = tokens.for_model(request.model)
    last_user = request.last_user_text
    choices = [
        _choice(
            request,
            tokenizer,
            content.pieces_for(settings, tokenizer, last_user, request.seed, index, request.output_tokens),
            index,
        )
        for index in range(request.n)
    ]
    return Generation(choices, count_prompt(tokenizer, request.messages))
