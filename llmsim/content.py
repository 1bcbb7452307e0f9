"""What the simulated model says: one function per response mode, deterministic from the seed."""

from __future__ import annotations

import random

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


def lorem(tokenizer: Tokenizer, tokens: int, seed: int | None, prompt: str, index: int) -> str:
    """Filler of exactly ``tokens`` tokens; the same seed, prompt and choice give the same text."""
    rng = random.Random(f"{seed}:{index}:{prompt}" if seed is not None else None)
    words: list[str] = []
    sentence_start = True
    for _ in range(tokens):  # every word is at least one token
        word = rng.choice(_LOREM)
        words.append(word.capitalize() if sentence_start else word)
        sentence_start = rng.random() < 0.12
        if sentence_start:
            words[-1] += "."
    return "".join(tokenizer.pieces(" ".join(words))[:tokens])


def text_for(
    settings: Settings, tokenizer: Tokenizer, last_user_text: str, seed: int | None, index: int
) -> str:
    mode = settings.response_mode
    if mode is ResponseMode.fixed:
        return settings.fixed_text
    if mode is ResponseMode.lorem:
        return lorem(tokenizer, settings.output_tokens, seed, last_user_text, index)
    return echo(last_user_text)
