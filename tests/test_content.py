"""Tool calls, structured output, logprobs and scripted answers, through the official SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

from tests.openai_spec import validate
from tests.servers import Server, run_server
from tests.sse import stream_events

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^ORD-[0-9]{4}$"},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        },
        "gift": {"type": ["boolean", "null"]},
    },
    "required": ["id", "items", "gift"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "place_order", "parameters": ORDER}},
]
SCHEMAS = {"get_weather": WEATHER, "place_order": ORDER}
ASK = [{"role": "user", "content": "What's the weather in Lisbon?"}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="test", max_retries=0)


def _check_calls(calls) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        Draft202012Validator(SCHEMAS[call.function.name]).validate(json.loads(call.function.arguments))


@pytest.mark.parametrize("seed", range(8))
def test_required_tool_call_arguments_match_the_schema(
    client: openai.OpenAI, server: Server, seed: int
) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    _check_calls(choice.message.tool_calls)
    arguments = sum(len(c.function.arguments) for c in choice.message.tool_calls)
    assert reply.usage.completion_tokens >= arguments // 8  # arguments are billed as tokens
    raw = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "seed": seed},
    ).json()
    validate("CreateChatCompletionResponse", raw)


def test_streamed_tool_calls_assemble_in_the_sdk(client: openai.OpenAI, server: Server) -> None:
    for seed in range(4):
        with client.chat.completions.stream(
            model="gpt-4o", messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
        ) as stream:
            final = stream.get_final_completion()
        assert final.choices[0].finish_reason == "tool_calls"
        _check_calls(final.choices[0].message.tool_calls)
        same = client.chat.completions.create(
            model="gpt-4o", messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
        )
        streamed = [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls]
        assert streamed == [
            (c.function.name, c.function.arguments) for c in same.choices[0].message.tool_calls
        ]
    body = {
        "model": "gpt-4o",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "stream": True,
        "seed": 1,
    }
    _, chunks, done = stream_events(server.url, body)
    assert done
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["tool_calls"][0]["id"].startswith("call_")
    assert first["tool_calls"][0]["function"]["arguments"] == ""
    pieces = [c for c in chunks[1:-1] if c["choices"][0]["delta"].get("tool_calls")]
    assert len(pieces) > 3  # arguments arrive in pieces, as OpenAI streams them


def test_named_function_and_parallel_off(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "place_order"}}
    for seed in range(5):
        reply = client.chat.completions.create(
            model="gpt-4o", messages=ASK, tools=TOOLS, tool_choice=named, seed=seed, parallel_tool_calls=False
        )
        calls = reply.choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["place_order"]
        _check_calls(calls)
    counts = {
        len(
            client.chat.completions.create(
                model="gpt-4o",
                messages=ASK,
                tools=TOOLS,
                tool_choice="required",
                seed=s,
                parallel_tool_calls=False,
            )
            .choices[0]
            .message.tool_calls
        )
        for s in range(10)
    }
    assert counts == {1}


def test_auto_without_probability_answers_text_and_none_never_calls(client: openai.OpenAI) -> None:
    for choice in ("auto", "none"):
        reply = client.chat.completions.create(model="gpt-4o", messages=ASK, tools=TOOLS, tool_choice=choice)
        assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.tool_calls is None


def test_auto_probability() -> None:
    with run_server(["--tool-call-probability", "1.0"]) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o", messages=ASK, tools=TOOLS)
        assert reply.choices[0].finish_reason == "tool_calls"
        _check_calls(reply.choices[0].message.tool_calls)


def test_tool_choice_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=ASK, tool_choice="required")
    assert err.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gpt-4o",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert err.value.param == "tool_choice"


@pytest.mark.parametrize("schema", [WEATHER, ORDER])
def test_json_schema_content_validates(client: openai.OpenAI, server: Server, schema: dict) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    for seed in range(5):
        reply = client.chat.completions.create(model="gpt-4o", messages=ASK, response_format=fmt, seed=seed)
        Draft202012Validator(schema).validate(json.loads(reply.choices[0].message.content))
    _, chunks, _ = stream_events(
        server.url, {"model": "gpt-4o", "messages": ASK, "response_format": fmt, "stream": True, "seed": 2}
    )
    joined = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    Draft202012Validator(schema).validate(json.loads(joined))


def test_json_object_content_is_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o", messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_logprobs_shape(client: openai.OpenAI, server: Server) -> None:
    reply = client.chat.completions.create(model="gpt-4o", messages=ASK, logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        assert all(t.logprob <= entry.logprob for t in entry.top_logprobs)
    raw = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": ASK, "logprobs": True, "top_logprobs": 2},
    ).json()
    validate("CreateChatCompletionResponse", raw)
    _, chunks, _ = stream_events(
        server.url, {"model": "gpt-4o", "messages": ASK, "logprobs": True, "stream": True}
    )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    with_logprobs = [c for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert len(with_logprobs) == reply.usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=ASK, top_logprobs=2)
    assert err.value.param == "top_logprobs"


SCRIPT = """
rules:
  - message: "weather in (?P<city>\\\\w+)"
    tool_call: {name: get_weather, arguments: {city: "{city}", unit: celsius}}
  - header: {x-tenant: acme}
    text: "Hello Acme"
  - message: "overload"
    error: {status: 503, message: "The engine is currently overloaded, please try again later.", type: server_error}
default:
  text: "I am a scripted llmsim."
"""


def test_script_mode_drives_responses(tmp_path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    with run_server(["--response-mode", "script", "--script", str(script)]) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        ask = lambda text, **kw: client.chat.completions.create(  # noqa: E731
            model="gpt-4o", messages=[{"role": "user", "content": text}], **kw
        )
        call = ask("what is the weather in Porto today").choices[0]
        assert call.finish_reason == "tool_calls"
        assert json.loads(call.message.tool_calls[0].function.arguments) == {
            "city": "Porto",
            "unit": "celsius",
        }
        assert ask("hi", extra_headers={"X-Tenant": "acme"}).choices[0].message.content == "Hello Acme"
        with pytest.raises(openai.InternalServerError) as err:
            ask("please overload now")
        assert err.value.status_code == 503
        validate("ErrorResponse", err.value.response.json())
        assert ask("anything else").choices[0].message.content == "I am a scripted llmsim."
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in ask("hi", stream=True, extra_headers={"x-tenant": "acme"})
            if c.choices
        )
        assert streamed == "Hello Acme"


def test_script_mode_needs_a_file() -> None:
    with pytest.raises(RuntimeError, match="needs --script"), run_server(["--response-mode", "script"]):
        pass
