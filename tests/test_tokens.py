"""Token counts against known values from OpenAI's tokenizers and cookbook."""

from __future__ import annotations

import pytest

from llmsim import tokens
from llmsim.generation import PromptMessage, count_prompt

# OpenAI cookbook, "How to count tokens with tiktoken": these messages are billed 129 prompt
# tokens on gpt-3.5-turbo / gpt-4 (cl100k_base) and 124 on gpt-4o (o200k_base).
COOKBOOK = [
    (
        "system",
        None,
        "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    ),
    ("system", "example_user", "New synergies will help drive top-line growth."),
    ("system", "example_assistant", "Things working well together will increase revenue."),
    (
        "system",
        "example_user",
        "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    ),
    ("system", "example_assistant", "Let's talk later when we're less busy about how to do better."),
    ("user", None, "This late pivot means we don't have time to boil the ocean for the client deliverable."),
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4", "gpt-4-turbo", "gpt-3.5-turbo"])
def test_hello_is_six_tokens(model: str) -> None:
    assert tokens.for_model(model).count("Hello, how are you?") == 6


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama-3", "approx"),
    ],
)
def test_encoding_per_model(model: str, encoding: str) -> None:
    assert tokens.for_model(model).name == encoding


def test_encodings_differ_where_they_should() -> None:
    text = "Bonjour, comment ça va aujourd'hui ? 今日はいい天気ですね。"
    assert tokens.for_model("gpt-4o").count(text) < tokens.for_model("gpt-4").count(text)


@pytest.mark.parametrize(("model", "expected"), [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124)])
def test_chat_overhead_matches_cookbook(model: str, expected: int) -> None:
    messages = [PromptMessage(role, (text,), name) for role, name, text in COOKBOOK]
    assert count_prompt(tokens.for_model(model), messages) == expected


def test_pieces_rejoin_to_text_even_inside_multibyte_characters() -> None:
    text = "naïve café — 世界 🚀🚀 ok"
    for model in ("gpt-4o", "gpt-4", "unknown-model"):
        pieces = tokens.for_model(model).pieces(text)
        assert "".join(pieces) == text
        assert all(pieces)


def test_approximate_count_for_unknown_tokenizer() -> None:
    tokenizer = tokens.for_model("my-local-llama")
    assert tokenizer.count("Hello, how are you?") == len(tokenizer.pieces("Hello, how are you?"))
    assert 4 <= tokenizer.count("Hello, how are you?") <= 8
