"""Usage a gateway can bill: prompt caching (cached_tokens), reasoning tokens, and the exact-usage
override (x-llmsim-usage, a script rule's usage), against a real server with the official SDKs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from llmsim.generation import CACHE_STEP, UsageOverride, parse_usage
from llmsim.identity import USAGE_HEADER
from llmsim.latency import NO_OVERRIDES, LatencyModel, Overrides, Profile
from tests.openai_spec import validate
from tests.servers import Server, run_server
from tests.sse import stream_events

RULES = {
    "rules": [
        {
            "message": "^usage rule$",
            "text": "scripted answer",
            "usage": {"prompt": 7, "completion": 3, "reasoning": 1},
        }
    ]
}
# 0.05 ms a prompt token: the planned TTFT shows what the prompt cache saves, at a few ms a request.
ARGS = ["--instance-id", "usage-a", "--prefill-ms-per-token", "0.05", "--script-rules", json.dumps(RULES)]
OVERRIDE = {USAGE_HEADER: "prompt=1200,completion=40,cached=1024,reasoning=0"}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with run_server(ARGS) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="test", max_retries=0)


@pytest.fixture(scope="module")
def claude(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0)


def _long_prompt(words: int = 700) -> list[dict[str, str]]:
    """A prompt of about 2 tokens a word pair, unique to the call (no other test shares its prefix)."""
    return [{"role": "user", "content": f"{uuid.uuid4().hex} " + "lorem ipsum " * words}]


def _chat(server: Server, body: dict, headers: dict[str, str] | None = None) -> dict:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    payload = response.json()
    validate("CreateChatCompletionResponse", payload)
    return payload


def _planned_ttft_ms(server: Server, trace: str) -> float:
    entries = httpx.get(f"{server.url}/llmsim/requests", params={"trace": trace}, timeout=5).json()["entries"]
    assert len(entries) == 1
    return entries[0]["plan"]["ttft_ms"]


# --- prompt caching -------------------------------------------------------------------------------


def test_repeated_prefix_is_cached_in_128_token_steps(server: Server) -> None:
    body = {"model": "gpt-4o", "messages": _long_prompt()}
    run = uuid.uuid4().hex[:8]
    first = _chat(server, body, {"x-llmsim-trace": f"{run}-1"})
    prompt = first["usage"]["prompt_tokens"]
    assert prompt > 1024 + CACHE_STEP
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    second = _chat(server, body, {"x-llmsim-trace": f"{run}-2"})
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert second["usage"]["prompt_tokens"] == prompt
    # The whole message is the prefix (the reply's 3 priming tokens are not), rounded down to 128.
    assert cached == (prompt - 3) // CACHE_STEP * CACHE_STEP
    assert cached >= 1024 and cached % CACHE_STEP == 0
    # Prefill is paid for the uncached tokens only (the plan, not wall time: no flakiness).
    assert _planned_ttft_ms(server, f"{run}-1") == pytest.approx(prompt * 0.05)
    assert _planned_ttft_ms(server, f"{run}-2") == pytest.approx((prompt - cached) * 0.05)

    # A conversation that continues it reads the earlier prompt from the cache.
    longer = body["messages"] + [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "lorem ipsum " * 200},
    ]
    follow = _chat(server, {"model": "gpt-4o", "messages": longer})
    assert follow["usage"]["prompt_tokens_details"]["cached_tokens"] == cached


def test_short_prompts_and_anthropic_without_cache_control_are_never_cached(
    server: Server, claude: anthropic.Anthropic
) -> None:
    short = {"model": "gpt-4o", "messages": [{"role": "user", "content": "lorem ipsum " * 400}]}
    for _ in range(2):
        assert _chat(server, short)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    messages = _long_prompt()
    for _ in range(2):
        usage = claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=messages).usage
        assert usage.cache_read_input_tokens == 0 and usage.input_tokens > 1024


def test_cached_tokens_in_the_include_usage_chunk(server: Server) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": _long_prompt(),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, first, _ = stream_events(server.url, body)
    _, second, done = stream_events(server.url, body)
    assert done
    for chunk in second:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert first[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    usage = second[-1]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == (usage["prompt_tokens"] - 3) // 128 * 128


def test_another_instance_has_its_own_cache(server: Server) -> None:
    body = {"model": "gpt-4o", "messages": _long_prompt()}
    _chat(server, body)
    assert _chat(server, body)["usage"]["prompt_tokens_details"]["cached_tokens"] >= 1024
    with run_server(["--instance-id", "usage-b"]) as other:
        assert _chat(other, body)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_the_plan_prefills_uncached_tokens_and_thinks_before_the_first_token() -> None:
    model = LatencyModel(Profile(prefill_ms_per_token=1.0, itl=10.0), {}, seed=1)
    assert model.plan("o3", 2000, 5, NO_OVERRIDES, 1.0).prefill == pytest.approx(2.0)
    assert model.plan("o3", 2000, 5, NO_OVERRIDES, 1.0, cached_tokens=1920).prefill == pytest.approx(0.08)
    thinking = model.plan("o3", 2000, 5, NO_OVERRIDES, 1.0, hidden_tokens=300)
    assert thinking.prefill == pytest.approx(2.0 + 3.0)  # 300 hidden tokens at 10 ms each
    assert len(thinking.itls) == 4  # the visible tokens keep their own gaps
    assert model.plan("o3", 2000, 5, Overrides(itl_ms=2), 2.0, hidden_tokens=300).prefill == pytest.approx(
        2.6
    )
    assert model.plan("o3", 2000, 5, Overrides(ttft_ms=50), 1.0, 1920, 300).prefill == pytest.approx(0.05)
    noisy = LatencyModel(Profile(itl=10.0, itl_stddev=5.0), {}, seed=1)
    sampled = [noisy.plan("o3", 0, 1, NO_OVERRIDES, 1.0, hidden_tokens=10_000).prefill for _ in range(20)]
    assert all(95 < s < 105 for s in sampled) and len(set(sampled)) > 1  # ~N(100 s, 0.5 s)


# --- reasoning ----------------------------------------------------------------------------------


def _reasoning(
    client: openai.OpenAI, model: str, effort: str | None, **extra
) -> openai.types.CompletionUsage:
    kwargs = {"reasoning_effort": effort} if effort else {}
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Think."}], seed=7, **kwargs, **extra
    )
    assert reply.usage is not None
    return reply


def test_reasoning_tokens_scale_with_effort(client: openai.OpenAI, server: Server) -> None:
    spent = {}
    for effort, (low, high) in {"low": (64, 256), "medium": (256, 1024), "high": (1024, 4096)}.items():
        reply = _reasoning(client, "o3-mini", effort)
        usage = reply.usage
        reasoning = usage.completion_tokens_details.reasoning_tokens
        assert low <= reasoning <= high
        visible = usage.completion_tokens - reasoning
        assert visible > 0 and reply.choices[0].message.content
        spent[effort] = reasoning
    assert spent["low"] <= spent["medium"] <= spent["high"]
    # Deterministic for a seed; medium is the default.
    assert (
        _reasoning(client, "o3-mini", "medium").usage.completion_tokens_details.reasoning_tokens
        == spent["medium"]
    )
    assert (
        _reasoning(client, "o3-mini", None).usage.completion_tokens_details.reasoning_tokens
        == spent["medium"]
    )
    assert _reasoning(client, "gpt-5", "minimal").usage.completion_tokens_details.reasoning_tokens == 0
    body = {
        "model": "o4-mini",
        "messages": [{"role": "user", "content": "Think."}],
        "reasoning_effort": "low",
    }
    validate("CreateChatCompletionResponse", _chat(server, body))


def test_models_that_do_not_reason_report_none(client: openai.OpenAI) -> None:
    for model in ("gpt-4o", "gpt-4.1"):
        usage = _reasoning(client, model, "high").usage
        assert usage.completion_tokens_details.reasoning_tokens == 0


def test_reasoning_counts_against_max_completion_tokens(client: openai.OpenAI, server: Server) -> None:
    reply = _reasoning(client, "o3", "high", max_completion_tokens=100)
    assert reply.usage.completion_tokens == 100
    assert reply.usage.completion_tokens_details.reasoning_tokens == 100
    assert reply.choices[0].message.content == ""
    assert reply.choices[0].finish_reason == "length"
    # Streamed: the visible chunks are completion - reasoning tokens.
    body = {
        "model": "o1",
        "messages": [{"role": "user", "content": "Think."}],
        "reasoning_effort": "low",
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, chunks, _ = stream_events(server.url, body)
    usage = chunks[-1]["usage"]
    pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning >= 64 and len(pieces) == usage["completion_tokens"] - reasoning


# --- the exact-usage override -------------------------------------------------------------------


def test_override_in_chat_body_and_stream(client: openai.OpenAI, server: Server) -> None:
    hello = [{"role": "user", "content": "Hello"}]
    usage = client.chat.completions.create(model="gpt-4o", messages=hello, extra_headers=OVERRIDE).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 40, 1240)
    assert usage.prompt_tokens_details.cached_tokens == 1024
    assert usage.completion_tokens_details.reasoning_tokens == 0

    header = {USAGE_HEADER: "prompt=10,completion=25,reasoning=5"}
    body = {"model": "o3-mini", "messages": hello, "stream": True, "stream_options": {"include_usage": True}}
    _, chunks, done = stream_events(server.url, body, header)
    assert done
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (10, 25, 35)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 5
    pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(pieces) == 20  # the visible answer is completion - reasoning tokens

    # Limits, metrics and the journal count what was reported.
    trace = uuid.uuid4().hex[:12]
    _chat(server, {"model": "gpt-4o", "messages": hello}, {**OVERRIDE, "x-llmsim-trace": trace})
    entries = httpx.get(f"{server.url}/llmsim/requests", params={"trace": trace}, timeout=5).json()["entries"]
    assert entries[0]["usage"] == {"prompt_tokens": 1200, "completion_tokens": 40}


def test_override_in_anthropic_body_and_stream(claude: anthropic.Anthropic) -> None:
    hello = [{"role": "user", "content": "Hello"}]
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=hello, extra_headers=OVERRIDE
    )
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (176, 1024, 40)
    assert usage.cache_creation_input_tokens == 0
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=hello, extra_headers=OVERRIDE
    ) as stream:
        deltas = [e for e in stream if e.type == "content_block_delta" and e.delta.type == "text_delta"]
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (176, 1024)
    assert final.usage.output_tokens == 40 == len(deltas)


def test_override_on_embeddings_bills_the_prompt(client: openai.OpenAI, server: Server) -> None:
    """Embeddings have prompt tokens only: the override's prompt is billed, and counted by the
    journal; its other numbers have nothing to apply to."""
    trace = uuid.uuid4().hex[:12]
    reply = client.embeddings.create(
        model="text-embedding-3-small",
        input=["one", "two"],
        extra_headers={**OVERRIDE, "x-llmsim-trace": trace},
    )
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (1200, 1200)
    entries = httpx.get(f"{server.url}/llmsim/requests", params={"trace": trace}, timeout=5).json()["entries"]
    assert entries[0]["usage"]["prompt_tokens"] == 1200
    plain = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert plain.usage.prompt_tokens == 2


@pytest.mark.parametrize(
    "value",
    [
        "prompt=abc",
        "prompt=-1",
        "bogus=1",
        "prompt=10,prompt=11",
        "prompt=10,cached=11",
        "completion=5,reasoning=6",
        "completion=9999999",
        "",
    ],
)
def test_a_bad_override_is_a_400_naming_the_header(client: openai.OpenAI, value: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={USAGE_HEADER: value}
        )
    error = bad.value.body
    assert error["param"] == USAGE_HEADER and error["code"] == "invalid_value"
    assert error["type"] == "invalid_request_error" and USAGE_HEADER in error["message"]


def test_a_bad_override_on_anthropic_is_its_400(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={USAGE_HEADER: "cached=5,prompt=1"},
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"


def test_parse_usage() -> None:
    assert parse_usage(" prompt = 5 , reasoning=0") == UsageOverride(prompt=5, reasoning=0)
    with pytest.raises(ValueError, match="given twice"):
        parse_usage("cached=1,cached=1")


# --- a script rule's usage ----------------------------------------------------------------------


def test_script_rule_usage(client: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "usage rule"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=asked)
    assert reply.choices[0].message.content == "scripted answer"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    assert usage.completion_tokens_details.reasoning_tokens == 1
    assert usage.prompt_tokens_details.cached_tokens == 0
    message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=asked)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)
    # The header wins over the rule.
    usage = client.chat.completions.create(
        model="gpt-4o", messages=asked, extra_headers={USAGE_HEADER: "prompt=99"}
    ).usage
    assert usage.prompt_tokens == 99 and usage.completion_tokens_details.reasoning_tokens == 0


def test_reset_forgets_prompt_caches_and_stored_responses(
    server: Server, claude: anthropic.Anthropic
) -> None:
    """/llmsim/reset forgets what the instance remembers between requests: OpenAI's prompt cache,
    Anthropic's cache_control cache and the stored Responses (the engine's ``memories``)."""
    body = {"model": "gpt-4o", "messages": _long_prompt()}
    _chat(server, body)
    assert _chat(server, body)["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    system = [
        {"type": "text", "text": f"{uuid.uuid4().hex} stable. " * 60, "cache_control": {"type": "ephemeral"}}
    ]
    hello = [{"role": "user", "content": "Hello"}]
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=8, system=system, messages=hello)
    read = claude.messages.create(model="claude-sonnet-4-5", max_tokens=8, system=system, messages=hello)
    assert read.usage.cache_read_input_tokens > 0
    stored = httpx.post(
        f"{server.url}/v1/responses", json={"model": "gpt-4o", "input": "Remember me"}, timeout=10
    )
    response_url = f"{server.url}/v1/responses/{stored.json()['id']}"
    assert httpx.get(response_url, timeout=5).status_code == 200

    assert httpx.post(f"{server.url}/llmsim/reset", timeout=5).status_code == 200

    assert _chat(server, body)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    again = claude.messages.create(model="claude-sonnet-4-5", max_tokens=8, system=system, messages=hello)
    assert again.usage.cache_read_input_tokens == 0 and again.usage.cache_creation_input_tokens > 0
    assert httpx.get(response_url, timeout=5).status_code == 404
