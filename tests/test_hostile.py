"""Hostile inputs against a real instance: each gets a 4xx in OpenAI's envelope within 5 s, or a
correct 200, and none of them slows the instance's /health down while it is in flight.

The cases run one after another against one instance; a separate process polls /health every
10 ms throughout, so the latencies it measures are the server's, not this process's (which builds
and parses multi-megabyte bodies). A case that leaves the instance unable to answer /health gets
the instance replaced, so every later case is still judged on its own.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.encodings import independent
from tests.hostile_schemas import binary_tree, nested_min_items, wrap
from tests.openai_spec import validate
from tests.servers import Server, run_server

ANSWER_WITHIN_S = 5.0  # every hostile request: a 4xx or a complete 200 within this
HEALTH_P99_S = 0.100  # /health p99 while the hostile requests are in flight (the whole table)
# One case has a dozen probes, so its "p99" is its slowest probe, which one scheduling hiccup of a
# loaded 2-core machine can decide: a case only has to show no stall (freeze) past this.
HEALTH_STALL_S = 0.250
HEALTH_INTERVAL_S = 0.010
MAX_STRING = 10 * 1024 * 1024  # OpenAI's longest string parameter: 10,485,760 characters
MAX_TTFT_MS = 3_600_000  # the longest TTFT override an instance accepts (1 hour)
OK_MESSAGES = [{"role": "user", "content": "hi"}]
LEAK = re.compile(r'Traceback|File "|\.py\b|site-packages|/(?:work|usr|home|tmp)/')

# --- what a case sends and what it may get back -------------------------------------------------


class Prefix(str):
    """An expected ``param`` that only has to start with this (``tools[0]...``)."""


ANY = object()  # any param (cases that may be refused for more than one reason)
Check = Callable[[dict[str, Any], dict[str, Any]], None]  # (request body, 200 body) -> raises


@dataclass
class Case:
    name: str
    build: Callable[[], bytes]  # the body, built just before sending (some are megabytes)
    statuses: tuple[int, ...]
    param: Any = ANY  # for an error: exact, a Prefix, None or ANY
    code: str | None | object = ANY
    check: Check | None = None  # for a 200
    headers: dict[str, str] = field(default_factory=dict)
    max_body: int | None = None  # bytes, for an error body that must stay short


def body(**fields: Any) -> Callable[[], bytes]:
    """A chat request with ``fields`` over a minimal valid one (callables are called at build)."""

    def build() -> bytes:
        request = {"model": "gpt-4o", "messages": OK_MESSAGES}
        request |= {k: v() if callable(v) else v for k, v in fields.items()}
        return json.dumps(request).encode()

    return build


def raw(data: Callable[[], bytes]) -> Callable[[], bytes]:
    return data


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# --- checks of a 200 ----------------------------------------------------------------------------


def count(text: str) -> int:
    return len(independent("o200k_base").encode_ordinary(text))  # gpt-4o's tokenizer


def exact_usage(request: dict[str, Any], answer: dict[str, Any]) -> None:
    """Usage as OpenAI bills it: 3 tokens a message + its role and content, 3 to prime the reply;
    the completion is the tokens of the text answered."""
    usage = answer["usage"]
    prompt = 3 + sum(3 + count(m["role"]) + count(m["content"]) for m in request["messages"])
    assert usage["prompt_tokens"] == prompt, f"prompt_tokens {usage['prompt_tokens']}, expected {prompt}"
    choices = answer["choices"]
    if all(c["finish_reason"] == "stop" and not c["message"].get("tool_calls") for c in choices):
        completion = sum(count(c["message"]["content"] or "") for c in choices)
        assert usage["completion_tokens"] == completion, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage


def tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "tool_choice": "required",
    }


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": schema, "strict": False},
        }
    }


def conforms(schema: dict[str, Any], text: str) -> None:
    # jsonschema_rs: Rust regexes run in linear time, so a ReDoS pattern cannot hang the test.
    errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(json.loads(text))]
    assert not errors, f"generated JSON does not match its schema: {errors[:3]}"


def valid_tool_calls(request: dict[str, Any], answer: dict[str, Any]) -> None:
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert calls, "tool_choice 'required' must give a tool call"
    for call in calls:
        conforms(request["tools"][0]["function"]["parameters"], call["function"]["arguments"])


def valid_content(request: dict[str, Any], answer: dict[str, Any]) -> None:
    conforms(request["response_format"]["json_schema"]["schema"], answer["choices"][0]["message"]["content"])


def logprobs_without_alternatives(request: dict[str, Any], answer: dict[str, Any]) -> None:
    content = answer["choices"][0]["logprobs"]["content"]
    assert content and all(entry["top_logprobs"] == [] for entry in content), content[:3]


def answered(request: dict[str, Any], answer: dict[str, Any]) -> None:
    """Nothing beyond a completion that matches OpenAI's schema (checked for every 200)."""


# --- the table ------------------------------------------------------------------------------------


def _nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_objects(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


# Schemas a generator must bound: a 200 must conform, or the request is refused naming the schema.
EXPENSIVE_SCHEMAS = {
    "binary tree, both children required": (binary_tree(), (400,)),
    "minProperties 100000": (wrap({"type": "object", "minProperties": 100_000}), (200, 400)),
    "minItems 1000000": (
        wrap({"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000}),
        (200, 400),
    ),
    "pattern a{1000000000}": (wrap({"type": "string", "pattern": "^a{1000000000}$"}), (200, 400)),
    "ReDoS pattern, minLength 60": (
        wrap({"type": "string", "pattern": r"^(\w+\s?)*!$", "minLength": 60}),
        (200, 400),
    ),
    "five nested minItems 20": (nested_min_items(5, 20), (200, 400)),
}
MALFORMED_SCHEMAS = {
    "minLength 'abc'": wrap({"type": "string", "minLength": "abc"}),
    "pattern '(('": wrap({"type": "string", "pattern": "(("}),
    "anyOf []": wrap({"anyOf": []}),
    "$ref 5": wrap({"$ref": 5}),
    "type 5": wrap({"type": 5}),
}


def _schema_cases() -> Iterator[Case]:
    for name, (schema, statuses) in EXPENSIVE_SCHEMAS.items():
        yield Case(
            f"tools: {name}", body(**tool(schema)), statuses, Prefix("tools[0]"), check=valid_tool_calls
        )
        yield Case(
            f"response_format: {name}",
            body(**response_format(schema)),
            statuses,
            Prefix("response_format"),
            check=valid_content,
        )
    # Deeper than a JSON parser may want to go: refused as it likes, but not with a 500.
    deep = _nested_objects(150)
    yield Case("tools: objects nested 150 deep", body(**tool(deep)), (200, 400), check=valid_tool_calls)
    yield Case(
        "response_format: objects nested 150 deep",
        body(**response_format(deep)),
        (200, 400),
        check=valid_content,
    )
    for name, schema in MALFORMED_SCHEMAS.items():
        yield Case(f"tools: {name}", body(**tool(schema)), (400,), Prefix("tools[0]"))
        yield Case(
            f"response_format: {name}", body(**response_format(schema)), (400,), Prefix("response_format")
        )


def _header_case(name: str, value: str) -> Case:
    """A per-request header out of bounds: 400 naming the header."""
    return Case(f"{name}: {value}", body(), (400,), name, headers={name: value})


CASES = [
    # Long prompts: an exact count, or a refusal (too long for the model), in seconds.
    Case("message of 32k chars", body(messages=lambda: user("x" * 32_000)), (200,), check=exact_usage),
    Case(
        "message of 1M chars",
        body(messages=lambda: user("x" * 1_000_000)),
        (200, 400),
        Prefix("messages"),
        check=exact_usage,
    ),
    Case(
        "message of 5M chars",
        body(messages=lambda: user("x" * 5_000_000)),
        (200, 400),
        Prefix("messages"),
        check=exact_usage,
    ),
    Case(
        "100k text parts",
        body(messages=lambda: [{"role": "user", "content": [{"type": "text", "text": "ab"}] * 100_000}]),
        (200, 400),
        check=answered,
    ),
    Case(
        "100k messages",
        body(messages=lambda: [{"role": "user", "content": "hi"}] * 100_000),
        (200, 400),
        check=exact_usage,
    ),
    Case(
        "string over OpenAI's max length",
        body(messages=lambda: user("x" * (MAX_STRING + 1))),
        (400,),
        "messages[0].content",
        "string_above_max_length",
    ),
    Case(
        "n 128 of a 32k-char message",
        body(n=128, messages=lambda: user("x" * 32_000)),
        (200, 400),
        check=exact_usage,
    ),
    Case(
        "four stop strings of 1M chars",
        body(stop=lambda: ["y" * 1_000_000] * 4),
        (200, 400),
        Prefix("stop"),
        check=answered,
    ),
    Case(
        "10k tools, one call required",
        body(
            tools=lambda: [
                {"type": "function", "function": {"name": f"f{i}", "parameters": wrap({"type": "integer"})}}
                for i in range(10_000)
            ],
            tool_choice="required",
        ),
        (200, 400),
        check=answered,
    ),
    *_schema_cases(),
    # Per-request headers: only finite, bounded numbers.
    _header_case("x-llmsim-fault", "timeout;hang=nan"),
    _header_case("x-llmsim-fault", "timeout;hang=inf"),
    _header_case("x-llmsim-fault", "slow;factor=nan"),
    _header_case("x-llmsim-fault", "slow;factor=inf"),
    _header_case("x-llmsim-ttft-ms", "1e308"),
    _header_case("x-llmsim-ttft-ms", str(MAX_TTFT_MS + 1)),
    _header_case("x-llmsim-ttft-ms", "nan"),
    _header_case("x-llmsim-itl-ms", "1e308"),
    Case(
        "x-llmsim-output-tokens: 1000000000",
        body(),
        (200, 400),
        "x-llmsim-output-tokens",
        check=answered,
        headers={"x-llmsim-output-tokens": "1000000000"},
    ),
    # Numbers: the types and ranges of OpenAI's spec.
    Case(
        "top_logprobs 0.0",
        body(logprobs=True, top_logprobs=0.0),
        (200,),
        check=logprobs_without_alternatives,
    ),
    Case("logit_bias 1e30", body(logit_bias={"50256": 1e30}), (400,), Prefix("logit_bias")),
    Case("logit_bias 101", body(logit_bias={"50256": 101}), (400,), Prefix("logit_bias")),
    Case("n 10**30", body(n=10**30), (400,), "n", "integer_above_max_value"),
    Case("negative max_tokens", body(max_tokens=-1), (400,), "max_tokens", "integer_below_min_value"),
    Case("max_tokens 10**30", body(max_tokens=10**30), (200, 400), "max_tokens", check=exact_usage),
    Case(
        "seed of 100k digits",
        raw(lambda: body()()[:-1] + b', "seed": 1' + b"0" * 100_000 + b"}"),
        (200, 400),
        check=answered,
    ),
    Case("temperature 1e400", raw(lambda: body()()[:-1] + b', "temperature": 1e400}'), (400,)),
    # Names echoed in messages: bounded.
    Case(
        "model name of 1 MB",
        body(model=lambda: "m" * 1_000_000),
        (404,),
        None,
        "model_not_found",
        max_body=2048,
    ),
    # Bytes that are barely (or not) JSON.
    Case("100k '['", raw(lambda: b"[" * 100_000), (400,)),
    Case("arrays nested 100k deep", raw(lambda: _nested_arrays(100_000)), (400,)),
    Case(
        "arrays nested 100k deep in an unknown field",
        raw(lambda: body()()[:-1] + b', "extra": ' + _nested_arrays(100_000) + b"}"),
        (200, 400),
        check=answered,
    ),
    Case(
        "not UTF-8",
        raw(lambda: b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
        (400,),
    ),
    Case(
        "lone surrogate",
        raw(lambda: b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
        (200, 400),
        check=answered,
    ),
]


# --- running it ---------------------------------------------------------------------------------

POLLER = r"""
import json, sys, threading, time
import httpx

url, interval = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
samples = []
with httpx.Client(timeout=2.0) as client:
    due = time.monotonic()
    while not stop.is_set():
        sent = time.monotonic()
        try:
            ok = client.get(url).status_code == 200
        except httpx.HTTPError:
            ok = False
        samples.append((sent, time.monotonic() - sent, ok))
        due = max(due + interval, time.monotonic())
        stop.wait(due - time.monotonic())
json.dump(samples, sys.stdout)
"""


@dataclass
class Sample:
    sent: float
    latency: float
    ok: bool


@dataclass
class Outcome:
    case: Case
    started: float
    elapsed: float
    response: httpx.Response | None
    error: str | None = None
    sent: bytes = b""  # the body, kept for the checks of a 200
    broke_instance: bool = False
    health: list[float] = field(default_factory=list)  # /health latencies while in flight


class Instance:
    """One llmsim instance and its /health poller; replaced when a case breaks it."""

    def __init__(self) -> None:
        self.stack = ExitStack()
        self.samples: list[Sample] = []
        self.start()

    def start(self) -> None:
        self.server: Server = self.stack.enter_context(run_server(["--instance-id", "sim-hostile"]))
        # A first request loads the model's tokenizer; the cases are judged on a warm instance.
        warm = httpx.post(
            f"{self.server.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES}
        )
        assert warm.status_code == 200, warm.text
        self.poller = subprocess.Popen(
            [sys.executable, "-c", POLLER, f"{self.server.url}/health", str(HEALTH_INTERVAL_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> None:
        assert self.poller.stdin is not None and self.poller.stdout is not None
        self.poller.stdin.close()
        output = self.poller.stdout.read()
        self.poller.wait()
        self.samples += [Sample(*s) for s in json.loads(output or b"[]")]
        if not self.responsive():
            self.server.process.kill()  # a wedged event loop would not act on SIGTERM
        self.stack.close()

    def responsive(self) -> bool:
        if self.server.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.server.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def send(instance: Instance, case: Case) -> Outcome:
    data = case.build()
    headers = {"content-type": "application/json", **case.headers}
    started = time.monotonic()
    try:
        with httpx.Client(timeout=ANSWER_WITHIN_S) as client:
            response = client.post(
                f"{instance.server.url}/v1/chat/completions", content=data, headers=headers
            )
        outcome = Outcome(case, started, time.monotonic() - started, response)
    except httpx.HTTPError as exc:
        outcome = Outcome(case, started, time.monotonic() - started, None, f"{type(exc).__name__}: {exc}")
    if outcome.response is not None and outcome.response.status_code == 200:
        outcome.sent = data
    return outcome


def latencies(samples: list[Sample], start: float, end: float) -> list[float]:
    """The latencies of the /health probes in flight between start and end.

    The poller waits for each answer, so a stall of L seconds hides the probes it would have sent
    meanwhile (coordinated omission): they are counted as having waited L - interval,
    L - 2 interval, ... A probe that failed counts as its 2 s timeout."""
    found = []
    for s in samples:
        if s.sent <= end and s.sent + s.latency >= start:
            latency = s.latency if s.ok else max(s.latency, 2.0)
            found += [latency - k * HEALTH_INTERVAL_S for k in range(int(latency / HEALTH_INTERVAL_S) + 1)]
    return [x for x in found if x > 0]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0.0


@pytest.fixture(scope="module")
def table() -> dict[str, Outcome]:
    """Every case once, in order, with /health polled throughout."""
    outcomes: dict[str, Outcome] = {}
    instance = Instance()
    runs: list[list[Outcome]] = [[]]  # outcomes per instance, to match them with its samples
    try:
        for case in CASES:
            outcome = send(instance, case)
            outcomes[case.name] = outcome
            runs[-1].append(outcome)
            # An instance that stopped answering, or that may still be working for a client that
            # gave up on it, is replaced: the next case is judged on its own.
            responsive = instance.responsive()
            if outcome.response is None or not responsive:
                outcome.broke_instance = not responsive
                instance.stop()
                for done in runs[-1]:
                    done.health = latencies(instance.samples, done.started, done.started + done.elapsed)
                instance.samples = []
                runs.append([])
                instance.start()
    finally:
        instance.stop()
    for done in runs[-1]:
        done.health = latencies(instance.samples, done.started, done.started + done.elapsed)
    return outcomes


def describe(outcome: Outcome) -> str:
    health = f"/health at most {max(outcome.health, default=0.0) * 1000:.0f} ms meanwhile"
    if outcome.response is None:
        return f"no answer after {outcome.elapsed:.2f}s ({outcome.error}); {health}"
    text = outcome.response.text
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{outcome.response.status_code} after {outcome.elapsed:.2f}s; {health}: {text}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(table: dict[str, Outcome], case: Case) -> None:
    outcome = table[case.name]
    assert outcome.response is not None, describe(outcome)
    assert outcome.elapsed <= ANSWER_WITHIN_S, describe(outcome)
    response = outcome.response
    assert response.status_code in case.statuses, describe(outcome)
    assert response.headers.get("x-llmsim-instance") == "sim-hostile"
    if response.status_code == 200:
        assert case.check is not None, "this case must be refused"
        answer = response.json()
        validate("CreateChatCompletionResponse", answer)
        # (answered needs no request: some bodies hold integers json.loads refuses to parse)
        case.check({} if case.check is answered else json.loads(outcome.sent), answer)
    else:
        assert response.headers["content-type"].startswith("application/json"), describe(outcome)
        payload = response.json()
        validate("ErrorResponse", payload)
        error = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}, payload
        assert error["message"] and error["type"] == "invalid_request_error", payload
        assert not LEAK.search(response.text), describe(outcome)
        if isinstance(case.param, Prefix):
            assert isinstance(error["param"], str) and error["param"].startswith(case.param), payload
        elif case.param is not ANY:
            assert error["param"] == case.param, payload
        if case.code is not ANY:
            assert error["code"] == case.code, payload
        if case.max_body is not None:
            assert len(response.content) < case.max_body, f"{len(response.content)} bytes"
    assert not outcome.broke_instance, f"the instance stopped answering /health after: {describe(outcome)}"
    assert max(outcome.health, default=0.0) < HEALTH_STALL_S, describe(outcome)


def test_health_stays_fast_during_the_whole_table(table: dict[str, Outcome]) -> None:
    every = [latency for outcome in table.values() for latency in outcome.health]
    assert every, "no /health sample was taken while the cases were in flight"
    slow = {name: max(o.health) for name, o in table.items() if o.health and max(o.health) >= HEALTH_P99_S}
    worst = ", ".join(f"{name}: {ms * 1000:.0f} ms" for name, ms in sorted(slow.items(), key=lambda x: -x[1]))
    assert p99(every) < HEALTH_P99_S, f"/health p99 {p99(every) * 1000:.0f} ms; slowest during: {worst}"
