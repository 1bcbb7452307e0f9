"""The official anthropic SDK against /v1/messages on a real server (uvicorn on 127.0.0.1); every
body and event checked against the SDK's generated types."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pydantic
import pytest
import uvicorn
from anthropic import types

from llmsim.app import create_app
from llmsim.settings import Settings
from llmsim.surfaces import anthropic_messages
from tests.servers import free_port, wait_until

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-llmsim-test"
VERSION = {"anthropic-version": "2023-06-01", "x-api-key": KEY}
HELLO = [{"role": "user", "content": "Hello, how are you?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
EVENTS = pydantic.TypeAdapter(types.RawMessageStreamEvent)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = Settings(
        models=(MODEL, "gpt-4o"),
        instance_id="sim-anthropic",
        api_keys=KEY,
        rpm=100_000,
        tpm=100_000_000,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/health", timeout=1).status_code == 200, what="in-process server")
    yield base
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)


def _post(
    url: str, body: Any, headers: dict[str, str] | None = None, path: str = "/v1/messages"
) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={**VERSION, **(headers or {})}, timeout=10)


def _sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_create(client: anthropic.Anthropic, url: str) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=256, messages=HELLO, system="Be brief.")
    assert reply.type == "message" and reply.role == "assistant" and reply.model == MODEL
    assert reply.id.startswith("msg_")
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert isinstance(reply.content[0], types.TextBlock)
    assert "Hello, how are you?" in reply.content[0].text
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.cache_read_input_tokens == 0
    assert reply.model_extra["llmsim_instance"] == "sim-anthropic"
    raw = _post(url, {"model": MODEL, "max_tokens": 256, "messages": HELLO})
    assert raw.status_code == 200
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["x-llmsim-instance"] == "sim-anthropic"
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "100000"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.headers["anthropic-ratelimit-input-tokens-limit"] == "100000000"
    assert not any(name.startswith("x-ratelimit") for name in raw.headers)
    types.Message.model_validate(raw.json())


def test_max_tokens_and_stop_sequence(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(model=MODEL, max_tokens=3, messages=HELLO)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    stopped = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "one STOP two"}],
        stop_sequences=["STOP"],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP"
    assert "STOP" not in stopped.content[0].text


def test_stream(client: anthropic.Anthropic, url: str) -> None:
    full = client.messages.create(model=MODEL, max_tokens=256, messages=HELLO).content[0].text
    with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == full == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    raw = _post(url, {"model": MODEL, "max_tokens": 256, "messages": HELLO, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["request-id"].startswith("req_")
    events = _sse(raw.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    for name, data in events:
        assert data["type"] == name
        if name != "ping":  # the SDK skips pings: not in its event union
            EVENTS.validate_python(data)
    assert events[0][1]["message"]["llmsim_instance"] == "sim-anthropic"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.messages.create(
        model=MODEL, max_tokens=512, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert reply.stop_reason == "tool_use"
    uses = [b for b in reply.content if isinstance(b, types.ToolUseBlock)]
    assert uses and all(u.id.startswith("toolu_") and u.name == "get_weather" for u in uses)
    for use in uses:
        jsonschema.validate(use.input, WEATHER["input_schema"])
    turn = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "sunny, 21 c"} for u in uses],
        },
    ]
    after = client.messages.create(model=MODEL, max_tokens=512, messages=turn, tools=[WEATHER])
    assert after.stop_reason in ("end_turn", "tool_use")
    named = client.messages.create(
        model=MODEL,
        max_tokens=512,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert [b.type for b in named.content] == ["tool_use"]
    with client.messages.stream(
        model=MODEL, max_tokens=512, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and all(b.id.startswith("toolu_") for b in streamed)
    jsonschema.validate(streamed[0].input, WEATHER["input_schema"])


def test_thinking(client: anthropic.Anthropic) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    reply = client.messages.create(model=MODEL, max_tokens=2048, messages=HELLO, thinking=thinking)
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].signature and reply.content[0].thinking
    with client.messages.stream(model=MODEL, max_tokens=2048, messages=HELLO, thinking=thinking) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].signature


def test_count_tokens(client: anthropic.Anthropic, url: str) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO, system="Be brief.")
    billed = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, system="Be brief.")
    assert counted.input_tokens == billed.usage.input_tokens > 0
    with_tools = client.messages.count_tokens(model=MODEL, messages=HELLO, tools=[WEATHER])
    assert with_tools.input_tokens > client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    raw = _post(url, {"model": MODEL, "messages": HELLO}, path="/v1/messages/count_tokens")
    types.MessageTokensCount.model_validate(raw.json())
    assert _post(url, {"model": MODEL}, path="/v1/messages/count_tokens").status_code == 400


def test_prompt_cache(client: anthropic.Anthropic) -> None:
    system = [
        {
            "type": "text",
            "text": "A long and stable system prompt. " * 50,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    first = client.messages.create(model=MODEL, max_tokens=32, system=system, messages=HELLO)
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    again = client.messages.create(
        model=MODEL, max_tokens=32, system=system, messages=[{"role": "user", "content": "Something else"}]
    )
    assert again.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert again.usage.cache_creation_input_tokens == 0
    plain = client.messages.create(model=MODEL, max_tokens=32, messages=HELLO)
    assert plain.usage.cache_creation_input_tokens == plain.usage.cache_read_input_tokens == 0


def _fault(client: anthropic.Anthropic, fault: str) -> anthropic.Anthropic:
    return client.with_options(default_headers={"x-llmsim-fault": fault})


def test_errors_are_the_sdks_classes(client: anthropic.Anthropic, url: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        _fault(client, "rate_limit").messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    response = limited.value.response
    assert response.headers["retry-after"] == "1" and "retry-after-ms" not in response.headers
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert response.headers["request-id"] == limited.value.request_id
    types.ErrorResponse.model_validate(response.json())
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as failed:
        _fault(client, "server_error").messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    assert failed.value.status_code == 500 and failed.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        _fault(client, "overloaded").messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(anthropic.AuthenticationError) as denied:
        anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=16, messages=HELLO
        )
    assert denied.value.body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nope", max_tokens=16, messages=HELLO)


def test_mid_stream_faults(client: anthropic.Anthropic, url: str) -> None:
    body = {"model": MODEL, "max_tokens": 256, "messages": HELLO, "stream": True}
    faulty = _fault(client, "disconnect;after=2")
    with (
        pytest.raises(anthropic.APIStatusError) as cut,
        faulty.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream,
    ):
        stream.get_final_message()
    assert cut.value.body["error"]["type"] == "overloaded_error"
    raw = httpx.post(
        f"{url}/v1/messages",
        json=body,
        headers={**VERSION, "x-llmsim-fault": "malformed;after=1"},
        timeout=10,
    )
    assert (
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"ty\n' in raw.text
    )
    assert raw.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_sdk_retries_honour_retry_after(client: anthropic.Anthropic, url: str) -> None:
    patch = httpx.patch(f"{url}/llmsim/config", json={"fail_first": 1, "failure_types": "rate_limit"})
    assert patch.status_code == 200, patch.text
    trace = f"retry{time.monotonic_ns()}"
    retrying = client.with_options(
        max_retries=1, default_headers={"x-llmsim-retry-after": "2", "x-llmsim-trace": trace}
    )
    started = time.monotonic()
    reply = retrying.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
    assert reply.stop_reason == "end_turn"
    assert time.monotonic() - started >= 1.9  # the SDK's own backoff would be under a second
    attempts = httpx.get(f"{url}/llmsim/requests", params={"trace": trace}).json()["entries"]
    assert [e["status"] for e in attempts] == [429, 200]


def test_models_in_anthropics_shape() -> None:
    listed = anthropic_messages.model_list([MODEL, "gpt-4o"])
    page = types.ModelInfo.model_validate(listed["data"][0])
    assert page.id == MODEL and listed["first_id"] == MODEL and listed["has_more"] is False
    assert anthropic_messages.model(MODEL, [MODEL])["type"] == "model"
    with pytest.raises(Exception) as missing:
        anthropic_messages.model("nope", [MODEL])
    status, body, _ = anthropic_messages.WIRE.render_error(missing.value, b"req_1")
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"


LONG = "x" * 20
BAD_INPUT = [
    ("missing max_tokens", {"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
    ("missing messages", {"model": MODEL, "max_tokens": 5}, "messages: Field required"),
    (
        "max_tokens zero",
        {"model": MODEL, "max_tokens": 0, "messages": HELLO},
        "max_tokens: Input should be greater",
    ),
    (
        "max_tokens string",
        {"model": MODEL, "max_tokens": "5", "messages": HELLO},
        "max_tokens: Input should be a valid integer",
    ),
    ("huge max_tokens", {"model": MODEL, "max_tokens": 10**9, "messages": HELLO}, "max_tokens: 1000000000 >"),
    (
        "bad role",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]},
        "messages.0.role",
    ),
    (
        "no role",
        {"model": MODEL, "max_tokens": 5, "messages": [{"content": "hi"}]},
        "messages.0.role: Field required",
    ),
    (
        "first not user",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "assistant", "content": "hi"}]},
        "first message",
    ),
    (
        "empty messages",
        {"model": MODEL, "max_tokens": 5, "messages": []},
        "messages: List should have at least 1 item",
    ),
    (
        "empty content",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
        "non-empty content",
    ),
    (
        "empty blocks",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": []}]},
        "non-empty content",
    ),
    (
        "blank text block",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}],
        },
        "messages.0.content.0.text",
    ),
    (
        "wrong block type",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}],
        },
        "messages.0.content.0.type",
    ),
    (
        "tool_use from user",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}
            ],
        },
        "messages.0.content.0.type",
    ),
    (
        "text not a string",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
        },
        "messages.0.content.0.text",
    ),
    (
        "stray tool_result",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}],
        },
        "tool_use_id",
    ),
    (
        "temperature high",
        {"model": MODEL, "max_tokens": 5, "messages": HELLO, "temperature": 3},
        "temperature",
    ),
    ("system number", {"model": MODEL, "max_tokens": 5, "messages": HELLO, "system": 5}, "system"),
    (
        "tool without schema",
        {"model": MODEL, "max_tokens": 5, "messages": HELLO, "tools": [{"name": "t"}]},
        "tools.0.input_schema: Field required",
    ),
    (
        "tool schema not object",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": HELLO,
            "tools": [{"name": "t", "input_schema": {"type": "string"}}],
        },
        "input_schema.type",
    ),
    (
        "tool_choice unknown tool",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": HELLO,
            "tools": [WEATHER],
            "tool_choice": {"type": "tool", "name": LONG},
        },
        "tool_choice.name",
    ),
    (
        "tool_choice without tools",
        {"model": MODEL, "max_tokens": 5, "messages": HELLO, "tool_choice": {"type": "any"}},
        "tool_choice",
    ),
    (
        "bad tool_choice",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": HELLO,
            "tools": [WEATHER],
            "tool_choice": {"type": "sometimes"},
        },
        "tool_choice.type",
    ),
    (
        "thinking budget small",
        {
            "model": MODEL,
            "max_tokens": 5000,
            "messages": HELLO,
            "thinking": {"type": "enabled", "budget_tokens": 10},
        },
        "thinking.budget_tokens",
    ),
    (
        "thinking budget >= max_tokens",
        {
            "model": MODEL,
            "max_tokens": 2000,
            "messages": HELLO,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
        },
        "budget_tokens",
    ),
    ("stream not bool", {"model": MODEL, "max_tokens": 5, "messages": HELLO, "stream": "yes"}, "stream"),
    ("body not an object", [1, 2], "object"),
]


@pytest.mark.parametrize(("case", "body", "expected"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input(url: str, case: str, body: Any, expected: str) -> None:
    response = _post(url, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert expected in payload["error"]["message"], payload
    assert response.headers["request-id"] == payload["request_id"]
    types.ErrorResponse.model_validate(payload)


def test_bad_requests_outside_the_body(url: str) -> None:
    invalid_json = httpx.post(
        f"{url}/v1/messages", content=b"{not json", headers={**VERSION, "content-type": "application/json"}
    )
    assert invalid_json.status_code == 400 and invalid_json.json()["error"]["type"] == "invalid_request_error"
    no_version = httpx.post(
        f"{url}/v1/messages",
        json={"model": MODEL, "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": KEY},
    )
    assert no_version.status_code == 400
    assert no_version.json()["error"]["message"] == "anthropic-version: header is required"
    no_key = httpx.post(f"{url}/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    unknown_model = _post(url, {"model": "claude-nope", "max_tokens": 5, "messages": HELLO})
    assert (
        unknown_model.status_code == 404 and unknown_model.json()["error"]["message"] == "model: claude-nope"
    )
    too_large = httpx.post(
        f"{url}/v1/messages",
        content=b"x" * (20 * 1024 * 1024),
        headers={**VERSION, "content-type": "application/json"},
    )
    assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "request_too_large"
