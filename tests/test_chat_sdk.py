"""The official openai SDK against a real `llmsim serve`; every body checked against OpenAI's spec."""

from __future__ import annotations

import httpx
import openai
import pytest

from llmsim.settings import DEFAULT_MODELS
from tests.openai_spec import validate
from tests.servers import Server, run_server
from tests.sse import stream_events

HELLO = [{"role": "user", "content": "Hello, how are you?"}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="test", max_retries=0)


def _raw(server: Server, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    payload = response.json()
    validate("CreateChatCompletionResponse", payload)
    return payload


def test_non_streaming(client: openai.OpenAI, server: Server) -> None:
    reply = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "gpt-4o"
    assert reply.system_fingerprint == "sim-test"
    assert reply.choices[0].message.role == "assistant"
    assert "Hello, how are you?" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    # 6 text tokens + 3 per message + 1 for the role + 3 reply priming
    assert reply.usage.prompt_tokens == 13
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    _raw(server, {"model": "gpt-4o", "messages": HELLO})


def test_streaming_joined_equals_non_streamed(client: openai.OpenAI, server: Server) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Stream me — ünïcode 世界 🚀"}]}
    full = client.chat.completions.create(**body).choices[0].message.content
    stream = client.chat.completions.create(**body, stream=True)
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(parts) == full
    headers, chunks, done = stream_events(server.url, {**body, "stream": True})
    assert done
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["system_fingerprint"] == "sim-test"
        assert chunk["object"] == "chat.completion.chunk"
        assert "usage" not in chunk
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    # One token per chunk: as many content chunks as completion tokens.
    usage = client.chat.completions.create(**body).usage
    assert len(contents) == usage.completion_tokens
    assert headers["x-llmsim-instance"] == "sim-test"


def test_stream_include_usage(server: Server) -> None:
    body = {"model": "gpt-4", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    _, chunks, done = stream_events(server.url, body)
    assert done
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    *rest, last = chunks
    assert all(c["usage"] is None for c in rest)
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["prompt_tokens"] == 13
    assert usage["completion_tokens"] == len(rest) - 2  # minus the role and the finish chunk
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_n_choices(client: openai.OpenAI, server: Server) -> None:
    reply = client.chat.completions.create(model="gpt-4o", messages=HELLO, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    per_choice = len(
        client.chat.completions.create(model="gpt-4o", messages=HELLO).choices[0].message.content
    )
    assert all(len(c.message.content) == per_choice for c in reply.choices)
    one = client.chat.completions.create(model="gpt-4o", messages=HELLO).usage.completion_tokens
    assert reply.usage.completion_tokens == 3 * one
    _raw(server, {"model": "gpt-4o", "messages": HELLO, "n": 3})
    _, chunks, _ = stream_events(server.url, {"model": "gpt-4o", "messages": HELLO, "n": 3, "stream": True})
    texts = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert finished == {0, 1, 2}
    assert set(texts.values()) == {reply.choices[0].message.content}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts(client: openai.OpenAI, field: str) -> None:
    full = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    cut = client.chat.completions.create(model="gpt-4o", messages=HELLO, **{field: 3})
    assert cut.usage.completion_tokens == 3 < full.usage.completion_tokens
    assert cut.choices[0].finish_reason == "length"
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)
    parts = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True, **{field: 3})
        if c.choices
    ]
    assert "".join(parts) == cut.choices[0].message.content


def test_stop_sequences(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "alpha beta gamma delta"}]
    full = client.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content
    cut = client.chat.completions.create(model="gpt-4o", messages=messages, stop="gamma")
    assert cut.choices[0].message.content == full[: full.index("gamma")]
    assert cut.choices[0].finish_reason == "stop"
    many = client.chat.completions.create(model="gpt-4o", messages=messages, stop=["delta", "beta"])
    assert many.choices[0].message.content == full[: full.index("beta")]
    assert many.usage.completion_tokens < cut.usage.completion_tokens
    absent = client.chat.completions.create(model="gpt-4o", messages=messages, stop=["zzz"])
    assert absent.choices[0].message.content == full


def test_models_list_and_retrieve(client: openai.OpenAI, server: Server) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == list(DEFAULT_MODELS) and "gpt-4o" in ids and "claude-sonnet-4-5" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    validate("ListModelsResponse", httpx.get(f"{server.url}/v1/models").json())
    validate("Model", httpx.get(f"{server.url}/v1/models/gpt-4o").json())
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-17")
    assert err.value.code == "model_not_found"
    validate("ErrorResponse", err.value.response.json())


def test_sdk_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-x", messages=HELLO)
    assert err.value.code == "model_not_found"
    assert err.value.message.startswith("Error code: 404")
    assert "The model `gpt-x` does not exist or you do not have access to it." in err.value.message
    validate("ErrorResponse", err.value.response.json())
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, n=0)
    assert (err.value.code, err.value.param) == ("integer_below_min_value", "n")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "wizard", "content": "x"}])
    assert (err.value.code, err.value.param) == ("invalid_value", "messages[0].role")
    validate("ErrorResponse", err.value.response.json())


def test_message_shapes_accepted(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Be exact."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "user", "content": "Thanks", "name": "alice"},
    ]
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        temperature=0.2,
        top_p=0.9,
        user="u-1",
        metadata={"team": "gw"},
        seed=7,
        presence_penalty=0.5,
        extra_body={"some_future_field": {"x": 1}},
    )
    assert reply.choices[0].message.content == 'You said: "Thanks"'


def test_seed_makes_lorem_deterministic() -> None:
    with run_server(["--instance-id", "lorem", "--response-mode", "lorem", "--output-tokens", "40"]) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)

        def ask(seed=None, content="topic one"):
            messages = [{"role": "user", "content": content}]
            return client.chat.completions.create(model="gpt-4o", messages=messages, seed=seed)

        first, again = ask(seed=42), ask(seed=42)
        assert first.choices[0].message.content == again.choices[0].message.content
        assert first.usage.completion_tokens == 40
        assert ask(seed=43).choices[0].message.content != first.choices[0].message.content
        assert (
            ask(seed=42, content="topic two").choices[0].message.content != first.choices[0].message.content
        )
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "topic one"}], "seed": 42}
        _, chunks, _ = stream_events(srv.url, {**body, "stream": True})
        joined = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert joined == first.choices[0].message.content


def test_fixed_mode() -> None:
    with run_server(["--response-mode", "fixed", "--fixed-text", "Forty-two."]) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4", messages=HELLO)
        assert reply.choices[0].message.content == "Forty-two."
        assert reply.usage.completion_tokens == 4  # "Fort", "y", "-two", "." in cl100k_base


def test_repeated_identical_bodies_stay_independent(server: Server) -> None:
    """The same bytes twice share their validation, never per-request state."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "same bytes, twice"}]}
    exact = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"x-llmsim-output-tokens": "37"}
    )
    plain = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert exact.json()["usage"]["completion_tokens"] == 37
    assert plain.json()["usage"]["completion_tokens"] != 37
    assert exact.json()["id"] != plain.json()["id"]
    bad = {"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}
    for _ in range(2):  # an invalid body is rejected every time it comes
        assert httpx.post(f"{server.url}/v1/chat/completions", json=bad).status_code == 400
