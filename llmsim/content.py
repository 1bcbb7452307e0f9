"""What the simulated model says: one function per response mode, deterministic from the seed."""

from __future__ import annotations

import random

from llmsim.latency import Dist
from llmsim.settings import ResponseMode, Settings
from llmsim.tokens import Tokenizer

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur excepteur sint occaecat cupidatat "
    "non proident sunt in culpa qui officia deserunt mollit anim id est laborum"
).split()


def echo(last_user_text: str) -> str:
    return f'You said: "{last_user_text}"'


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
) -> list[str]:
    """The answer as token pieces (one a stream chunk); ``exact`` forces the token count, padding
    with filler or cutting, for tests that need a known length."""
    mode = settings.response_mode
    if mode is ResponseMode.lorem:
        length = exact or output_length(settings, seed, index)
        return lorem(tokenizer, length, seed, last_user_text, index)
    text = settings.fixed_text if mode is ResponseMode.fixed else echo(last_user_text)
    pieces = tokenizer.pieces(text)
    if exact is None or len(pieces) == exact:
        return pieces
    if len(pieces) > exact:
        return pieces[:exact]
    return pieces + lorem(tokenizer, exact - len(pieces), seed, last_user_text, index, lead=" ")
