"""OpenAI's Responses API (issue 14) on a real server, through the official openai SDK and raw
HTTP: every body, stored object and stream event checked against OpenAI's OpenAPI schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from llmsim.surfaces.openai_responses import Store, Stored, _parse
from llmsim_cluster import probe as probe_cli
from tests.openai_spec import validate
from tests.servers import Server, run_server

MODEL = "gpt-4o"
KEY = "sk-responses-test"
INSTANCE = "sim-responses"
AUTH = {"authorization": f"Bearer {KEY}"}
TIMEOUT = 10.0
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with run_server(["--instance-id", INSTANCE, "--api-keys", KEY]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)


def post(server: Server, body: Any, headers: dict[str, str] | None = None, path: str = "/v1/responses"):
    return httpx.post(f"{server.url}{path}", json=body, headers={**AUTH, **(headers or {})}, timeout=TIMEOUT)


def events(
    server: Server, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The stream's events, each checked: a known type, its ``event:`` name equal to its type,
    sequence numbers 0, 1, 2 … and the schema. A stream cut short ends the list."""
    found: list[dict[str, Any]] = []
    name = None
    with httpx.stream(
        "POST",
        f"{server.url}/v1/responses",
        json={**body, "stream": True},
        headers={**AUTH, **(headers or {})},
        timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-llmsim-instance"] == INSTANCE
        try:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    event = json.loads(line[len("data: ") :])
                    assert event["type"] == name
                    assert event["sequence_number"] == len(found)
                    validate("ResponseStreamEvent", event)
                    found.append(event)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            found.append({"type": "(connection dropped)"})
    return found


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    validate("ErrorResponse", body)
    return body["error"]


# --- the SDK end to end ---------------------------------------------------------------------------


def test_create_renders_a_valid_response_with_identity_and_usage(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Hello there", instructions="Be brief.", metadata={"team": "gateway"}
    )
    assert raw.headers["x-llmsim-instance"] == INSTANCE
    body = json.loads(raw.content)
    validate("Response", body)
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["completed_at"] >= body["created_at"]
    assert body["llmsim_instance"] == INSTANCE  # identity in the body, metadata left as sent
    assert body["metadata"] == {"team": "gateway"} and body["instructions"] == "Be brief."
    (message,) = body["output"]
    assert message["id"].startswith("msg_") and message["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    response = raw.parse()
    assert response.output_text == message["content"][0]["text"]
    assert 'You said: "Hello there"' in response.output_text


def test_stream_helper_assembles_the_final_response(client: openai.OpenAI, server: Server) -> None:
    with client.responses.stream(model=MODEL, input="Stream me, please") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.status == "completed" and 'You said: "Stream me, please"' in final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0
    deltas = kinds.count("response.output_text.delta")
    assert deltas == final.usage.output_tokens
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    found = events(server, {"model": MODEL, "input": "raw events"})
    assert found[0]["response"]["llmsim_instance"] == INSTANCE
    assert found[0]["response"]["status"] == "in_progress" and "usage" not in found[0]["response"]
    last = found[-1]["response"]
    assert last["llmsim_instance"] == INSTANCE and last["usage"]["output_tokens"] > 0
    assert all("obfuscation" in e for e in found if e["type"] == "response.output_text.delta")
    text = "".join(e["delta"] for e in found if e["type"] == "response.output_text.delta")
    assert text == last["output"][0]["content"][0]["text"]
    # The stored copy is the streamed final response.
    stored = httpx.get(f"{server.url}/v1/responses/{last['id']}", headers=AUTH, timeout=TIMEOUT).json()
    assert stored == last


def test_function_call_round_trip_with_previous_response_id(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        input="What is the weather in Lisbon?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    validate("Response", json.loads(raw.content))
    first = raw.parse()
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    # The previous turn's call must be answered.
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, previous_response_id=first.id, input="And tomorrow?")
    assert refused.value.body["param"] == "input" and call.call_id in refused.value.body["message"]

    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}],
    )
    assert second.status == "completed" and second.previous_response_id == first.id
    assert "Lisbon" in second.output_text  # the earlier turn's question is in the prompt
    assert second.usage.input_tokens > first.usage.input_tokens
    # A chain of three: the first turn's call ID is still known two turns later.
    third = client.responses.create(model=MODEL, previous_response_id=second.id, input="Thanks!")
    assert third.usage.input_tokens > second.usage.input_tokens
    # Without the chain the output answers nothing.
    with pytest.raises(openai.BadRequestError) as stray:
        client.responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]
        )
    assert stray.value.body["param"] == "input"
    # The client may send the call itself instead of previous_response_id.
    manual = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Weather in Porto?"},
            {"type": "function_call", "call_id": "call_own", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_own", "output": "sunny"},
        ],
    )
    assert "Porto" in manual.output_text


def test_streamed_function_call(server: Server) -> None:
    found = events(
        server, {"model": MODEL, "input": "weather?", "tools": [WEATHER], "tool_choice": "required"}
    )
    kinds = [e["type"] for e in found]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert found[2]["item"]["type"] == "function_call" and found[2]["item"]["arguments"] == ""
    done = next(e for e in found if e["type"] == "response.function_call_arguments.done")
    pieces = "".join(e["delta"] for e in found if e["type"] == "response.function_call_arguments.delta")
    assert pieces == done["arguments"] and done["name"] == "get_weather"
    final = found[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["output"][0]["arguments"] == done["arguments"]


def test_retrieve_input_items_and_delete(client: openai.OpenAI, server: Server) -> None:
    created = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Bonjour"}]},
            {"role": "assistant", "content": "Salut"},
            {"role": "user", "content": "Encore"},
        ],
    )
    fetched = httpx.get(f"{server.url}/v1/responses/{created.id}", headers=AUTH, timeout=TIMEOUT)
    assert fetched.status_code == 200 and fetched.headers["x-llmsim-instance"] == INSTANCE
    validate("Response", fetched.json())
    assert client.responses.retrieve(created.id).output_text == created.output_text

    page = httpx.get(f"{server.url}/v1/responses/{created.id}/input_items", headers=AUTH, timeout=TIMEOUT)
    listed = page.json()
    validate("ResponseItemList", listed)
    assert [item["role"] for item in listed["data"]] == [
        "user",
        "assistant",
        "user",
        "developer",
    ]  # newest first
    assert listed["first_id"] == listed["data"][0]["id"] and listed["has_more"] is False
    items = client.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.role for item in items.data] == ["developer", "user"] and items.has_more
    rest = client.responses.input_items.list(created.id, order="asc", after=items.data[-1].id)
    assert [item.role for item in rest.data] == ["assistant", "user"]

    deleted = httpx.delete(f"{server.url}/v1/responses/{created.id}", headers=AUTH, timeout=TIMEOUT)
    assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    for method, path in [
        ("DELETE", created.id),
        ("GET", created.id),
        ("GET", f"{created.id}/input_items"),
        ("GET", "resp_unknown"),
    ]:
        response = httpx.request(method, f"{server.url}/v1/responses/{path}", headers=AUTH, timeout=TIMEOUT)
        assert "not found" in error_of(response, 404)["message"]

    unstored = client.responses.create(model=MODEL, input="forget me", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=MODEL, input="hi", previous_response_id=unstored.id)
    assert missing.value.body["param"] == "previous_response_id"
    assert missing.value.body["code"] == "previous_response_not_found"


def test_input_tokens_count_matches_the_billed_input(client: openai.OpenAI, server: Server) -> None:
    request = {"model": MODEL, "input": "Count these tokens, please.", "instructions": "Be terse."}
    billed = client.responses.create(**request).usage.input_tokens
    counted = client.responses.input_tokens.count(**request)
    assert counted.object == "response.input_tokens" and counted.input_tokens == billed
    raw = post(server, request, path="/v1/responses/input_tokens")
    assert raw.json() == {"object": "response.input_tokens", "input_tokens": billed}
    assert error_of(post(server, {"input": 5}, path="/v1/responses/input_tokens"), 400)["param"] == "input"


def test_max_output_tokens_ends_incomplete(server: Server) -> None:
    body = {"model": MODEL, "input": "a long answer", "max_output_tokens": 16}
    longer = {"x-llmsim-output-tokens": "40"}
    whole = post(server, body, longer).json()
    validate("Response", whole)
    assert whole["status"] == "incomplete" and whole["completed_at"] is None
    assert whole["incomplete_details"] == {"reason": "max_output_tokens"}
    assert whole["usage"]["output_tokens"] == 16 and whole["output"][0]["status"] == "incomplete"
    found = events(server, body, longer)
    assert found[-1]["type"] == "response.incomplete"
    assert found[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_reasoning_model_answers_with_a_reasoning_item(client: openai.OpenAI, server: Server) -> None:
    body = {"model": "o3", "input": "Think first", "reasoning": {"effort": "low"}}
    whole = post(server, body).json()
    validate("Response", whole)
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message"]
    assert whole["output"][0]["id"].startswith("rs_") and whole["reasoning"]["effort"] == "low"
    details = whole["usage"]["output_tokens_details"]
    assert 64 <= details["reasoning_tokens"] <= 256  # low effort (llmsim.generation.REASONING_EFFORTS)
    high = post(server, {**body, "reasoning": {"effort": "high"}, "max_output_tokens": 8000}).json()
    assert high["usage"]["output_tokens_details"]["reasoning_tokens"] >= 1024  # scales with effort
    assert (
        post(server, {**body, "model": "gpt-4o", "reasoning": None}).json()["usage"]["output_tokens_details"][
            "reasoning_tokens"
        ]
        == 0
    )
    found = events(server, body)
    assert found[2]["item"]["type"] == "reasoning" and found[3]["type"] == "response.output_item.done"
    assert found[4]["item"]["type"] == "message" and found[4]["output_index"] == 1
    with client.responses.stream(model="o3", input="Think first") as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "reasoning" and final.output_text


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=MODEL,
        input="A person",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema"
    loose = client.responses.create(
        model=MODEL, input="JSON please", text={"format": {"type": "json_object"}}
    )
    assert isinstance(json.loads(loose.output_text), dict)


# --- bad input ----------------------------------------------------------------------------------

GOOD = {"model": MODEL, "input": "hi"}
MANY = {f"k{i}": "v" for i in range(17)}
BAD_SCHEMA = {"type": "object", "properties": {"a": {"type": "nonsense"}}}

BAD_INPUT = [
    ({"input": "hi"}, 400, "model"),
    ({"model": MODEL}, 400, "input"),
    ({"model": 5, "input": "hi"}, 400, "model"),
    ({**GOOD, "input": 5}, 400, "input"),
    (
        {**GOOD, "input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
        400,
        "input[0].content[0]",
    ),
    (
        {**GOOD, "input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
        400,
        "input[0].content[0]",
    ),
    ({**GOOD, "input": [{"role": "user", "content": [{"type": "bogus"}]}]}, 400, "input[0].content[0].type"),
    (
        {**GOOD, "input": [{"role": "user", "content": [{"type": "input_text", "text": 7}]}]},
        400,
        "input[0].content[0].text",
    ),
    ({**GOOD, "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
    ({**GOOD, "input": [{"type": "bogus"}]}, 400, "input[0].type"),
    ({**GOOD, "input": [{"role": "user", "content": "x"}] * 4097}, 400, "input"),
    ({**GOOD, "model": "no-such-model"}, 404, "model"),
    ({**GOOD, "previous_response_id": "resp_unknown"}, 404, "previous_response_id"),
    (
        {**GOOD, "tools": [{"type": "function", "name": "f", "parameters": BAD_SCHEMA}]},
        400,
        "tools[0].parameters",
    ),
    ({**GOOD, "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({**GOOD, "tools": [{"type": "function", "name": "has space"}]}, 400, "tools[0].name"),
    ({**GOOD, "tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, 400, "tool_choice"),
    ({**GOOD, "tool_choice": "sometimes"}, 400, "tool_choice"),
    ({**GOOD, "max_output_tokens": 10**30}, 400, "max_output_tokens"),
    ({**GOOD, "max_output_tokens": 5}, 400, "max_output_tokens"),
    ({**GOOD, "max_output_tokens": "100"}, 400, "max_output_tokens"),
    ({**GOOD, "temperature": 3}, 400, "temperature"),
    ({**GOOD, "stream": "yes"}, 400, "stream"),
    ({**GOOD, "store": 1}, 400, "store"),
    ({**GOOD, "metadata": MANY}, 400, "metadata"),
    ({**GOOD, "metadata": {"k": "v" * 513}}, 400, "metadata.k"),
    ({**GOOD, "instructions": ["not", "text"]}, 400, "instructions"),
    ({**GOOD, "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format.schema"),
    (
        {**GOOD, "text": {"format": {"type": "json_schema", "name": "x", "schema": BAD_SCHEMA}}},
        400,
        "text.format.schema",
    ),
    ({**GOOD, "reasoning": {"effort": "high"}}, 400, "reasoning.effort"),
    ({**GOOD, "model": "o3", "reasoning": {"effort": "enormous"}}, 400, "reasoning.effort"),
    ({**GOOD, "background": True}, 400, "background"),
    ({**GOOD, "conversation": "conv_1"}, 400, "conversation"),
    ([GOOD], 400, None),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_INPUT, ids=[str(p) for _, _, p in BAD_INPUT])
def test_bad_input_is_openai_envelope_with_param(
    server: Server, body: Any, status: int, param: str | None
) -> None:
    error = error_of(post(server, body), status)
    assert error["param"] == param, error
    assert error["message"] and error["type"] == "invalid_request_error"


def test_bad_bodies_and_auth(server: Server) -> None:
    not_json = httpx.post(f"{server.url}/v1/responses", content=b"{nope", headers=AUTH, timeout=TIMEOUT)
    assert error_of(not_json, 400)["message"]
    limit = httpx.get(
        f"{server.url}/v1/responses/resp_x/input_items", params={"limit": 0}, headers=AUTH, timeout=TIMEOUT
    )
    assert error_of(limit, 404)  # the unknown ID first
    stored = post(server, GOOD).json()["id"]
    for query, param in [({"limit": 0}, "limit"), ({"limit": "many"}, "limit"), ({"order": "up"}, "order")]:
        bad = httpx.get(
            f"{server.url}/v1/responses/{stored}/input_items", params=query, headers=AUTH, timeout=TIMEOUT
        )
        assert error_of(bad, 400)["param"] == param
    for method, path in [
        ("POST", "/v1/responses"),
        ("POST", "/v1/responses/input_tokens"),
        ("GET", f"/v1/responses/{stored}"),
        ("DELETE", f"/v1/responses/{stored}"),
        ("GET", f"/v1/responses/{stored}/input_items"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", json=GOOD, timeout=TIMEOUT)
        assert response.status_code == 401, (method, path)
        validate("ErrorResponse", response.json())


# --- faults -------------------------------------------------------------------------------------


def test_disconnect_fault_sends_response_failed_then_drops(client: openai.OpenAI, server: Server) -> None:
    body = {"model": MODEL, "input": "cut me off"}
    found = events(server, body, {"x-llmsim-fault": "disconnect;after=4", "x-llmsim-output-tokens": "20"})
    assert found[-1]["type"] == "(connection dropped)"
    failed = found[-2]
    assert failed["type"] == "response.failed" and failed["sequence_number"] == len(found) - 2
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert failed["response"]["llmsim_instance"] == INSTANCE
    # The store keeps what the client was told: the failed response, not the completed one.
    stored = httpx.get(
        f"{server.url}/v1/responses/{found[0]['response']['id']}", headers=AUTH, timeout=TIMEOUT
    )
    assert stored.json()["status"] == "failed" and stored.json()["error"]["code"] == "server_error"
    validate("Response", stored.json())
    kinds = []
    with (
        pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError, RuntimeError)),
        client.responses.stream(
            model=MODEL, input="cut me off", extra_headers={"x-llmsim-fault": "disconnect"}
        ) as stream,
    ):
        for event in stream:
            kinds.append(event.type)
        stream.get_final_response()
    assert kinds[-1] == "response.failed"


def test_malformed_fault_sends_a_corrupt_event(server: Server) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/responses",
        json={**GOOD, "stream": True},
        headers={**AUTH, "x-llmsim-fault": "malformed;after=2"},
        timeout=TIMEOUT,
    ) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    broken = [d for d in data if not d.endswith("}")]
    assert len(broken) == 1 and broken[0].startswith('{"type":"response.output_text.delta"')
    assert json.loads(data[-1])["type"] == "response.completed"


def test_immediate_fault_is_openai_envelope(server: Server) -> None:
    error = error_of(post(server, GOOD, {"x-llmsim-fault": "server_error"}), 500)
    assert error["type"] == "server_error"


# --- the store's bounds -------------------------------------------------------------------------


def _entry(previous: str | None = None, text: str = "x") -> Stored:
    """A stored turn: ``text`` in, ``re: text`` out."""
    body = {"model": "gpt-4o", "input": text, "previous_response_id": previous}
    parsed = _parse(json.dumps(body).encode(), frozenset({"gpt-4o"}))
    output = [{"type": "message", "content": [{"type": "output_text", "text": f"re: {text}"}]}]
    return Stored(json.dumps({"output": output}).encode(), parsed.body, parsed.own, parsed.calls, len(text))


def test_store_is_bounded_by_count_and_characters() -> None:
    store = Store(size=3, chars=100)
    for key in "abc":
        store.put(key, _entry())
    assert store.get("a") is not None  # a is now the most recent
    store.put("d", _entry())
    assert store.get("b") is None and len(store) == 3
    store.put("big", _entry(text="y" * 99))  # c goes for the count, a for the characters
    assert store.get("big") is not None and store.get("d") is not None
    assert len(store) == 2 and store.used == 100
    store.put("huge", _entry(text="z" * 500))  # larger than the whole budget: kept nowhere
    assert len(store) == 0 and store.used == 0


def test_store_chain_ends_at_an_evicted_turn() -> None:
    store = Store(size=2)
    store.put("r1", _entry(None, "one"))
    store.put("r2", _entry("r1", "two"))
    store.put("r3", _entry("r2", "three"))  # r1 evicted
    messages, _, _ = store.chain("r3")
    assert [(m.role, m.texts) for m in messages] == [
        ("user", ("two",)),
        ("assistant", ("re: two",)),
        ("user", ("three",)),
        ("assistant", ("re: three",)),
    ]
    with pytest.raises(Exception) as missing:
        store.chain("r1")
    assert missing.value.status == 404


# --- llmsim probe --api responses -----------------------------------------------------------------


def run_probe(capsys: pytest.CaptureFixture[str], server: Server, *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    argv = [server.url, "--api", "responses", "--api-key", KEY, "--instances", server.url, "--json", *args]
    code = probe_cli.main(argv)
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, json.loads(captured.out)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_probe_reads_identity_and_usage(
    capsys: pytest.CaptureFixture[str], server: Server, stream: bool
) -> None:
    code, report = run_probe(capsys, server, "-n", "4", *(["--stream"] if stream else []))
    assert code == 0, report["verdict"]
    assert report["distribution"]["counts"] == {INSTANCE: 4}


@pytest.mark.parametrize(
    ("fault", "kind"), [("disconnect;after=2", "stream_error"), ("malformed;after=2", "malformed")]
)
def test_probe_fails_broken_streams_by_kind(
    capsys: pytest.CaptureFixture[str], server: Server, fault: str, kind: str
) -> None:
    code, report = run_probe(capsys, server, "--stream", "-n", "3", "-H", f"x-llmsim-fault: {fault}")
    assert code == 1 and report["failures"] == {kind: 3}
