"""``POST /v1/completions`` (legacy) with the official openai SDK against a real `llmsim serve`: bodies
and stream chunks against OpenAI's spec, echo, suffix, logprobs, n × prompts, best_of billing,
include_usage, usage against an independent tiktoken count, and OpenAI's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import tiktoken

from tests.openai_spec import validate
from tests.servers import Server, run_server

INSTANCE = "sim-cmpl"
URL = "/v1/completions"
M = "gpt-3.5-turbo-instruct"


@pytest.fixture(scope="module")
def sim() -> Iterator[Server]:
    with run_server(["--instance-id", INSTANCE, "--api-keys", "sk-cmpl"]) as server:
        yield server


@pytest.fixture(scope="module")
def client(sim: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-cmpl", max_retries=0)


AUTH = {"authorization": "Bearer sk-cmpl"}


def _post(sim: Server, body: dict) -> httpx.Response:
    return httpx.post(f"{sim.url}{URL}", json=body, headers=AUTH, timeout=10)


def _raw(sim: Server, body: dict) -> dict:
    response = _post(sim, body)
    assert response.status_code == 200, response.text
    payload = response.json()
    validate("CreateCompletionResponse", payload)
    return payload


def _chunks(sim: Server, body: dict) -> list[dict[str, Any]]:
    """Every chunk of a stream, each validated; the stream must end with [DONE]."""
    chunks: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{sim.url}{URL}", json={**body, "stream": True}, headers=AUTH, timeout=10
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        # OpenAI sends a null finish_reason until a choice ends; its published schema forgets null.
        checked = {
            **chunk,
            "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]],
        }
        validate("CreateCompletionResponse", checked)
        chunks.append(chunk)
    return chunks


def test_non_streaming_shape_and_usage(client: openai.OpenAI, sim: Server, cl100k: tiktoken.Encoding) -> None:
    prompt = "Write a haiku about gateways"
    reply = client.completions.create(model=M, prompt=prompt, max_tokens=50)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-") and reply.model == M
    assert reply.system_fingerprint == INSTANCE
    (choice,) = reply.choices
    assert choice.index == 0 and choice.logprobs is None and choice.finish_reason == "stop"
    assert prompt in choice.text  # the default response mode echoes the prompt
    assert reply.usage.prompt_tokens == len(cl100k.encode_ordinary(prompt))  # no chat framing
    assert reply.usage.completion_tokens == len(cl100k.encode_ordinary(choice.text))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    payload = _raw(sim, {"model": "davinci-002", "prompt": prompt * 3})
    assert payload["choices"][0]["finish_reason"] == "length"  # max_tokens defaults to 16
    assert payload["usage"]["completion_tokens"] == 16


def test_streaming_joined_equals_non_streamed(client: openai.OpenAI, sim: Server) -> None:
    body = {"model": M, "prompt": "Stream me please", "max_tokens": 40, "seed": 7}
    full = client.completions.create(**body).choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(**body, stream=True) if c.choices]
    assert "".join(parts) == full
    chunks = _chunks(sim, body)
    assert all(c["object"] == "text_completion" and c["system_fingerprint"] == INSTANCE for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and "usage" not in chunks[-1]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]


def test_include_usage_chunk(client: openai.OpenAI, cl100k: tiktoken.Encoding) -> None:
    stream = client.completions.create(
        model=M, prompt="count me", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert last.usage.prompt_tokens == len(cl100k.encode_ordinary("count me"))
    assert last.usage.completion_tokens == len(cl100k.encode_ordinary(text)) == 5


def test_echo_and_suffix(client: openai.OpenAI, sim: Server) -> None:
    prompt = "Once upon a time"
    plain = client.completions.create(model=M, prompt=prompt, max_tokens=8, seed=1)
    echoed = client.completions.create(model=M, prompt=prompt, max_tokens=8, seed=1, echo=True)
    assert echoed.choices[0].text == prompt + plain.choices[0].text
    assert echoed.usage == plain.usage  # the echoed prompt is not billed again
    # Insertion: the suffix is accepted; the answer is the inserted text only, as OpenAI's.
    inserted = client.completions.create(model=M, prompt=prompt, suffix=" The end.", max_tokens=8, seed=1)
    assert inserted.choices[0].text == plain.choices[0].text
    streamed = _chunks(sim, {"model": M, "prompt": prompt, "max_tokens": 8, "seed": 1, "echo": True})
    assert streamed[0]["choices"][0]["text"] == prompt  # the echo comes first
    assert "".join(c["choices"][0]["text"] for c in streamed if c["choices"]) == echoed.choices[0].text
    nothing = client.completions.create(model=M, prompt=prompt, max_tokens=0, echo=True)
    assert nothing.choices[0].text == prompt and nothing.usage.completion_tokens == 0


def test_logprobs_legacy_object(client: openai.OpenAI, sim: Server, cl100k: tiktoken.Encoding) -> None:
    prompt = "Tell me"
    reply = client.completions.create(model=M, prompt=prompt, max_tokens=6, logprobs=3)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == 6
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert lp.text_offset[0] == len(prompt)  # offsets run on from the prompt, as OpenAI's
    assert all(
        len(top) == 3 and top[t] == p
        for t, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
    )
    echoed = _raw(sim, {"model": M, "prompt": prompt, "max_tokens": 6, "logprobs": 0, "echo": True})
    lp0 = echoed["choices"][0]["logprobs"]
    assert lp0["tokens"][:2] == [cl100k.decode([t]) for t in cl100k.encode_ordinary(prompt)]
    assert lp0["text_offset"][0] == 0 and "".join(lp0["tokens"]) == echoed["choices"][0]["text"]
    chunks = _chunks(sim, {"model": M, "prompt": prompt, "max_tokens": 3, "logprobs": 1})
    steps = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["text"]]
    assert [s["tokens"][0] for s in steps] == lp.tokens[:3]
    assert [s["text_offset"][0] for s in steps] == lp.text_offset[:3]


def test_n_per_prompt_and_token_arrays(client: openai.OpenAI, sim: Server, cl100k: tiktoken.Encoding) -> None:
    prompts = ["alpha prompt", "beta prompt", "gamma"]
    reply = client.completions.create(model=M, prompt=prompts, n=2, max_tokens=20)
    assert [c.index for c in reply.choices] == list(range(6))
    for c in reply.choices:
        assert prompts[c.index // 2] in c.text  # index = prompt_index * n + i
    assert reply.usage.prompt_tokens == sum(len(cl100k.encode_ordinary(p)) for p in prompts)
    ids = [cl100k.encode_ordinary(p) for p in prompts[:2]]
    as_ids = client.completions.create(model=M, prompt=ids, max_tokens=20)
    assert [c.text for c in as_ids.choices] == [reply.choices[0].text, reply.choices[2].text]
    single = client.completions.create(model=M, prompt=ids[0], max_tokens=20)
    assert single.choices[0].text == reply.choices[0].text and single.usage.prompt_tokens == len(ids[0])
    chunks = _chunks(sim, {"model": M, "prompt": prompts[:2], "n": 2, "max_tokens": 20})
    texts = {
        i: "".join(c["choices"][0]["text"] for c in chunks if c["choices"] and c["choices"][0]["index"] == i)
        for i in range(4)
    }
    assert [texts[i] for i in range(4)] == [c.text for c in reply.choices[:4]]


def test_best_of_is_billed_for_every_candidate(client: openai.OpenAI) -> None:
    one = client.completions.create(model=M, prompt="bill me", max_tokens=4)
    best = client.completions.create(model=M, prompt="bill me", max_tokens=4, best_of=3)
    assert len(best.choices) == 1 and best.choices[0].text == one.choices[0].text
    assert best.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert best.usage.prompt_tokens == one.usage.prompt_tokens


def test_sdk_exception_classes(client: openai.OpenAI, sim: Server) -> None:
    with pytest.raises(openai.NotFoundError) as chat_model:
        client.completions.create(model="gpt-4o", prompt="x")
    assert chat_model.value.body["param"] == "model"
    assert chat_model.value.body["message"].startswith("This is a chat model and not supported")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=M, prompt="x", logprobs=6)
    bad_key = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.completions.create(model=M, prompt="x")


BAD = [
    # (body, status, param, code, message start)
    (
        {"model": M, "prompt": "x", "logprobs": 6},
        400,
        "logprobs",
        "integer_above_max_value",
        "Invalid 'logprobs'",
    ),
    (
        {"model": M, "prompt": "x", "logprobs": -1},
        400,
        "logprobs",
        "integer_below_min_value",
        "Invalid 'logprobs'",
    ),
    (
        {"model": M, "prompt": "x", "logprobs": True},
        400,
        "logprobs",
        "invalid_type",
        "Invalid type for 'logprobs'",
    ),
    (
        {"model": M, "prompt": "x", "n": 3, "best_of": 2},
        400,
        "best_of",
        "invalid_value",
        "Invalid value for 'best_of'",
    ),
    (
        {"model": M, "prompt": "x", "best_of": 21},
        400,
        "best_of",
        "integer_above_max_value",
        "Invalid 'best_of'",
    ),
    (
        {"model": M, "prompt": "x", "best_of": 2, "stream": True},
        400,
        "best_of",
        "invalid_value",
        "Invalid value for 'best_of'",
    ),
    ({"model": M, "prompt": "x", "n": 0}, 400, "n", "integer_below_min_value", "Invalid 'n'"),
    ({"model": M, "prompt": "x", "n": 10**30}, 400, "n", "integer_above_max_value", "Invalid 'n'"),
    (
        {"model": M, "prompt": "x", "max_tokens": -1},
        400,
        "max_tokens",
        "integer_below_min_value",
        "Invalid 'max_tokens'",
    ),
    (
        {"model": M, "prompt": "x", "max_tokens": 10**30},
        400,
        None,
        None,
        "This model's maximum context length is 4097 tokens",
    ),
    (
        {"model": "davinci-002", "prompt": "x", "max_tokens": 16384},
        400,
        None,
        None,
        "This model's maximum context length is 16384",
    ),
    (
        {"model": M, "prompt": "x", "max_tokens": "5"},
        400,
        "max_tokens",
        "invalid_type",
        "Invalid type for 'max_tokens'",
    ),
    (
        {"model": M, "prompt": "x", "temperature": 3},
        400,
        "temperature",
        "decimal_above_max_value",
        "Invalid 'temperature'",
    ),
    (
        {"model": M, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
        "array_above_max_length",
        "Invalid 'stop'",
    ),
    ({"model": M, "prompt": "x", "echo": "yes"}, 400, "echo", "invalid_type", "Invalid type for 'echo'"),
    ({"model": M, "prompt": "x", "suffix": 5}, 400, "suffix", "invalid_type", "Invalid type for 'suffix'"),
    (
        {"model": M, "prompt": "x", "stream_options": {"include_usage": True}},
        400,
        "stream_options",
        "invalid_value",
        "The 'stream_options'",
    ),
    ({"model": M, "prompt": 5}, 400, "prompt", "invalid_type", "Invalid type for 'prompt'"),
    ({"model": M, "prompt": {"text": "x"}}, 400, "prompt", "invalid_type", "Invalid type for 'prompt'"),
    ({"model": M, "prompt": ["a", 1]}, 400, "prompt", "invalid_value", "Invalid 'prompt'"),
    ({"model": M, "prompt": [[1], []]}, 400, "prompt", "invalid_value", "Invalid 'prompt'"),
    ({"model": M, "prompt": [[10**30]]}, 400, "prompt", "invalid_value", "Invalid 'prompt'"),
    (
        {"model": M, "prompt": ["a"] * 2049},
        400,
        "prompt",
        "array_above_max_length",
        "Invalid 'prompt': array too long.",
    ),
    ({"model": M, "prompt": ["a"] * 200, "best_of": 20}, 400, "n", "invalid_value", "Too many completions"),
    ({"model": M, "prompt": "word " * 5000}, 400, None, None, "This model's maximum context length is 4097"),
    ({"prompt": "x"}, 400, None, None, "you must provide a model parameter"),
    ({"model": "gpt-4o", "prompt": "x"}, 404, "model", None, "This is a chat model and not supported"),
    ({"model": "text-embedding-3-small", "prompt": "x"}, 404, "model", None, "This model does not support"),
    ({"model": "nope", "prompt": "x"}, 404, None, "model_not_found", "The model `nope` does not exist"),
]


@pytest.mark.parametrize(("body", "status", "param", "code", "message"), BAD)
def test_bad_input_gets_openai_errors(
    sim: Server, body: dict, status: int, param, code, message: str
) -> None:
    response = _post(sim, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert (error["param"], error["code"]) == (param, code), error
    assert set(error) == {"message", "type", "param", "code"}


def test_journal_counts_the_request(sim: Server) -> None:
    response = httpx.post(
        f"{sim.url}{URL}",
        json={"model": M, "prompt": "journal me", "max_tokens": 5},
        headers={**AUTH, "x-llmsim-trace": "cmpl-journal-1"},
        timeout=10,
    )
    assert response.status_code == 200 and response.headers["x-llmsim-instance"] == INSTANCE
    (entry,) = httpx.get(f"{sim.url}/llmsim/requests", params={"trace": "cmpl-journal"}, timeout=10).json()[
        "entries"
    ]
    assert entry["path"] == URL and entry["model"] == M
    assert entry["usage"]["prompt_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert entry["usage"]["completion_tokens"] == response.json()["usage"]["completion_tokens"]


def test_faults_apply(sim: Server) -> None:
    response = httpx.post(
        f"{sim.url}{URL}",
        json={"model": M, "prompt": "fail me"},
        headers={**AUTH, "x-llmsim-fault": "server_error"},
        timeout=10,
    )
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
