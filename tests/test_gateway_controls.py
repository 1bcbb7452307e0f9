"""Faults, API keys, rate limits, the control API and /metrics, met the way a gateway meets them:
through the official SDK, httpx and a real nginx."""

from __future__ import annotations

import json
import re
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.nginx import run_nginx, upstream
from tests.openai_spec import validate
from tests.servers import run_server, wait_until

HI = [{"role": "user", "content": "Hello, how are you?"}]
CHAT = {"model": "gpt-4o", "messages": HI}
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s)?(\d+ms)?$")


def sdk(url: str, retries: int = 0, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1", api_key=kwargs.pop("api_key", "test"), max_retries=retries, **kwargs
    )


def chat(url: str, headers: dict | None = None, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, **body}, headers=headers or {}, timeout=30)


@pytest.fixture(scope="module")
def plain():
    with run_server(["--instance-id", "ctl"]) as server:
        yield server


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "exception", "status", "code"),
    [
        ("rate_limit", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("server_error", openai.InternalServerError, 500, None),
        ("overloaded", openai.InternalServerError, 503, None),
        ("bad_gateway", openai.InternalServerError, 502, None),
        ("context_length", openai.BadRequestError, 400, "context_length_exceeded"),
        ("auth", openai.AuthenticationError, 401, "invalid_api_key"),
    ],
)
def test_immediate_faults_raise_the_sdk_exception(plain, fault, exception, status, code) -> None:
    client = sdk(plain.url)
    with pytest.raises(exception) as err:
        client.chat.completions.create(**CHAT, extra_headers={"x-llmsim-fault": fault})
    assert err.value.status_code == status
    assert err.value.code == code
    validate("ErrorResponse", err.value.response.json())
    assert err.value.response.headers["x-llmsim-instance"] == "ctl"
    if fault == "rate_limit":
        assert int(err.value.response.headers["retry-after"]) >= 1


def test_status_override(plain) -> None:
    response = chat(plain.url, {"x-llmsim-fault": "server_error;status=504"})
    assert response.status_code == 504
    validate("ErrorResponse", response.json())


def test_sdk_retries_through_429_and_5xx_honouring_retry_after() -> None:
    with run_server(["--fail-first", "2", "--failure-types", "rate_limit,server_error"]) as server:
        client = sdk(server.url, retries=3)
        started = time.monotonic()
        reply = client.chat.completions.create(**CHAT)
        elapsed = time.monotonic() - started
        assert reply.choices[0].finish_reason == "stop"
        stats = httpx.get(f"{server.url}/llmsim/stats").json()
        assert stats["requests"]["/v1/chat/completions"] in (
            {"429": 2, "200": 1},
            {"429": 1, "500": 1, "200": 1},
            {"500": 2, "200": 1},
        )
        if "429" in stats["requests"]["/v1/chat/completions"]:
            assert elapsed >= 0.9  # the SDK waited for Retry-After: 1
        assert sum(stats["faults"].values()) == 2


def test_fail_first_then_success() -> None:
    with run_server(["--fail-first", "3"]) as server:
        statuses = [chat(server.url).status_code for _ in range(5)]
    assert statuses == [500, 500, 500, 200, 200]


def test_failure_rate_is_seeded_and_counted() -> None:
    args = ["--failure-rate", "0.5", "--failure-types", "overloaded", "--fault-seed", "7"]
    runs = []
    for _ in range(2):
        with run_server(args) as server:
            runs.append([chat(server.url).status_code for _ in range(40)])
            metrics = httpx.get(f"{server.url}/metrics").text
    assert runs[0] == runs[1]
    assert 8 <= runs[0].count(503) <= 32 and set(runs[0]) == {200, 503}
    assert (
        f'llmsim_faults_total{{instance="{_instance(metrics)}",type="overloaded"}} {runs[0].count(503)}.0'
        in metrics
    )


def _instance(metrics_text: str) -> str:
    return re.search(r'instance="([^"]+)"', metrics_text).group(1)


def test_timeout_fault_client_gives_up_or_hang_passes(plain) -> None:
    client = sdk(plain.url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**CHAT, extra_headers={"x-llmsim-fault": "timeout"})
    assert time.monotonic() - started < 5
    started = time.monotonic()
    response = chat(plain.url, {"x-llmsim-fault": "timeout;hang=0.4"})
    assert response.status_code == 504 and time.monotonic() - started >= 0.4
    validate("ErrorResponse", response.json())
    # The abandoned request did not leave a slot taken.
    wait_until(lambda: httpx.get(f"{plain.url}/health").json()["running"] == 0, timeout=5, what="idle")


def test_disconnect_breaks_the_stream_without_done(plain) -> None:
    client = sdk(plain.url)
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(
            **CHAT, stream=True, extra_headers={"x-llmsim-fault": "disconnect;after=3"}
        ):
            received.append(chunk)
    assert len(received) == 3
    with httpx.stream(
        "POST",
        f"{plain.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-llmsim-fault": "disconnect;after=2"},
    ) as response:
        lines = []
        with pytest.raises(httpx.RemoteProtocolError):
            for line in response.iter_lines():
                lines.append(line)
    assert not any("[DONE]" in line for line in lines)
    assert httpx.get(f"{plain.url}/health").status_code == 200


def test_malformed_chunk_breaks_the_sdk(plain) -> None:
    client = sdk(plain.url)
    with pytest.raises(Exception) as err:  # noqa: PT011 - the SDK raises its JSON decoder's error
        list(
            client.chat.completions.create(
                **CHAT, stream=True, extra_headers={"x-llmsim-fault": "malformed;after=2"}
            )
        )
    assert (
        "json" in type(err.value).__name__.lower()
        or "json" in str(err.value).lower()
        or isinstance(err.value, openai.APIError)
    )


def test_slow_multiplies_ttft() -> None:
    with run_server(["--prefill-overhead", "50"]) as server:
        chat(server.url)  # loads the tokenizer
        started = time.monotonic()
        chat(server.url, {"x-llmsim-fault": "slow;factor=6"})
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        chat(server.url)
        assert time.monotonic() - started < 0.3


def test_bad_fault_header_is_a_400(plain) -> None:
    response = chat(plain.url, {"x-llmsim-fault": "meteor"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-llmsim-fault"


def test_faults_through_nginx(plain, tmp_path) -> None:
    with run_nginx(tmp_path, upstream([plain.port])) as url:
        client = sdk(url)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(**CHAT, extra_headers={"x-llmsim-fault": "server_error"})
        validate("ErrorResponse", err.value.response.json())
        assert err.value.response.headers["x-llmsim-instance"] == "ctl"
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**CHAT, extra_headers={"x-llmsim-fault": "rate_limit"})
        assert client.chat.completions.create(**CHAT).system_fingerprint == "ctl"


# --- API keys ------------------------------------------------------------------------------------


def test_api_keys(tmp_path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# key org project tier\nsk-file-key-0123456789abcdef org-a proj-a free\n")
    with run_server(["--api-keys", "sk-flag-key-0123456789abcdef", "--api-keys-file", str(keys)]) as server:
        with pytest.raises(openai.AuthenticationError) as err:
            sdk(server.url, api_key="sk-wrong-key-0123456789abcdefghij").chat.completions.create(**CHAT)
        assert err.value.code == "invalid_api_key"
        assert "sk-wrong-key-0123456789abcdefghij" not in err.value.message
        assert "sk-wrong" in err.value.message and "ghij" in err.value.message  # masked, OpenAI-style
        validate("ErrorResponse", err.value.response.json())
        missing = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        assert (
            missing.status_code == 401 and "didn't provide an API key" in missing.json()["error"]["message"]
        )
        for key in ("sk-flag-key-0123456789abcdef", "sk-file-key-0123456789abcdef"):
            assert sdk(server.url, api_key=key).chat.completions.create(**CHAT).choices
        via_x_api_key = httpx.post(
            f"{server.url}/v1/chat/completions",
            json=CHAT,
            headers={"x-api-key": "sk-flag-key-0123456789abcdef"},
        )
        assert via_x_api_key.status_code == 200
        assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key
    log = server.process.stdout.read().decode()
    assert "sk-wrong-key-0123456789abcdefghij" not in log and "sk-flag-key-0123456789abcdef" not in log


# --- rate limits ------------------------------------------------------------------------------


def test_rpm_limit_headers_and_429() -> None:
    with run_server(["--rpm", "10", "--tpm", "100000"]) as server:
        responses = [chat(server.url) for _ in range(11)]
    ok, limited = responses[:10], responses[10]
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in ok]
    assert remaining == list(range(9, -1, -1))
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "10"
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert DURATION.match(r.headers["x-ratelimit-reset-requests"]), r.headers[
            "x-ratelimit-reset-requests"
        ]
        assert DURATION.match(r.headers["x-ratelimit-reset-tokens"])
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100000
    assert limited.status_code == 429
    error = limited.json()["error"]
    validate("ErrorResponse", limited.json())
    assert error["code"] == "rate_limit_exceeded" and "requests per min" in error["message"]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"


def test_sdk_honours_retry_after_on_the_rpm_limit() -> None:
    with run_server(["--rpm", "60"]) as server:
        seen: list[tuple[int, float, float | str | None]] = []

        def record(response: httpx.Response) -> None:
            # The SDK waits retry-after-ms when given (the precise wait), else retry-after.
            ms = response.headers.get("retry-after-ms")
            wait = float(ms) / 1000 if ms else response.headers.get("retry-after")
            seen.append((response.status_code, time.monotonic(), wait))

        client = sdk(server.url, retries=2, http_client=httpx.Client(event_hooks={"response": [record]}))
        # The bucket refills one request a second: drain it, then ask through the SDK. Should a
        # request's worth refill in between (the first attempt is a 200), drain again.
        for _ in range(5):
            statuses = []
            while 429 not in statuses and len(statuses) < 200:
                statuses.append(chat(server.url).status_code)
            assert statuses[-1] == 429 and set(statuses[:-1]) <= {200}
            seen.clear()
            reply = client.chat.completions.create(**CHAT)
            if seen[0][0] == 429:
                break
        assert reply.choices and [status for status, _, _ in seen][-1] == 200
        (first, at, retry_after), (_, retried_at, _) = seen[0], seen[1]
        assert first == 429 and retry_after is not None
        assert retried_at - at >= float(retry_after) * 0.9  # the SDK waited as told


def test_tpm_limit_counts_max_tokens() -> None:
    with run_server(["--tpm", "1000"]) as server:
        first = chat(server.url, max_tokens=900)
        second = chat(server.url, max_tokens=900)
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 1000 - 900
    assert second.status_code == 429
    assert (
        second.json()["error"]["type"] == "tokens" and "tokens per min" in second.json()["error"]["message"]
    )


# --- control API ------------------------------------------------------------------------------


def test_patch_config_changes_behaviour_at_once(plain) -> None:
    base = f"{plain.url}/llmsim/config"
    try:
        patched = httpx.patch(base, json={"failure_rate": 1.0, "failure_types": "bad_gateway"})
        assert patched.status_code == 200 and patched.json()["failure_rate"] == 1.0
        assert chat(plain.url).status_code == 502
        httpx.patch(base, json={"failure_rate": 0.0, "response_mode": "fixed", "fixed_text": "patched"})
        assert chat(plain.url).json()["choices"][0]["message"]["content"] == "patched"
        bad = httpx.patch(base, json={"itl": -5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "itl"
        fixed = httpx.patch(base, json={"port": 1})
        assert fixed.status_code == 400 and fixed.json()["error"]["param"] == "port"
        assert httpx.post(f"{plain.url}/llmsim/reset").json() == {"reset": True}
        # Counters start again from the reset itself (this stats call counts once it has answered).
        assert httpx.get(f"{plain.url}/llmsim/stats").json()["requests"] == {"/llmsim/reset": {"200": 1}}
    finally:
        httpx.patch(base, json={"failure_rate": 0.0, "response_mode": "echo"})


def test_admin_token_guards_the_control_paths() -> None:
    with run_server(["--admin-token", "s3cret"]) as server:
        for method, path in (
            ("GET", "/llmsim/config"),
            ("PATCH", "/llmsim/config"),
            ("POST", "/llmsim/reset"),
            ("GET", "/llmsim/stats"),
        ):
            response = httpx.request(method, f"{server.url}{path}", json={})
            assert response.status_code == 401, path
            validate("ErrorResponse", response.json())
        auth = {"authorization": "Bearer s3cret"}
        config = httpx.get(f"{server.url}/llmsim/config", headers=auth).json()
        assert config["admin_token"] == "***"
        assert httpx.patch(f"{server.url}/llmsim/config", json={"itl": 1}, headers=auth).status_code == 200
        assert chat(server.url).status_code == 200  # the API itself needs no admin token


# --- metrics ----------------------------------------------------------------------------------


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_move_with_requests() -> None:
    with run_server(["--instance-id", "met", "--itl", "2"]) as server:
        before = _samples(server.url)
        chat(server.url)
        httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": True})
        chat(server.url, {"x-llmsim-fault": "server_error"})
        after = _samples(server.url)
    names = {name for name, _ in after}
    for required in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:request_success_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "llmsim_requests_total",
        "llmsim_faults_total",
    ):
        assert required in names, required

    def value(name, **labels):
        return sum(
            v for (n, ls), v in after.items() if n == name and labels.items() <= dict(ls).items()
        ) - sum(v for (n, ls), v in before.items() if n == name and labels.items() <= dict(ls).items())

    assert value("vllm:request_success_total", model_name="gpt-4o", instance="met") == 2
    assert value("vllm:prompt_tokens_total", model_name="gpt-4o") == 26
    assert value("vllm:time_to_first_token_seconds_count", model_name="gpt-4o") == 2
    assert value("vllm:inter_token_latency_seconds_count", model_name="gpt-4o") > 0
    assert value("llmsim_requests_total", endpoint="/v1/chat/completions", status="500") == 1
    assert value("llmsim_faults_total", type="server_error") == 1
    assert all(dict(ls).get("instance") == "met" for n, ls in after if n.startswith(("vllm:", "llmsim_")))


def test_json_access_log() -> None:
    with run_server(["--log-format", "json", "--instance-id", "logged"]) as server:
        chat(server.url, {"x-request-id": "trace-42"})
    lines = [
        json.loads(line)
        for line in server.process.stdout.read().decode().splitlines()
        if line.startswith("{")
    ]
    entry = next(line for line in lines if line["request_id"] == "trace-42")
    assert entry["instance"] == "logged" and entry["status"] == 200 and entry["model"] == "gpt-4o"
    assert entry["prompt_tokens"] == 13 and entry["completion_tokens"] > 0
    assert "ttft_ms" in entry and entry["duration_ms"] >= 0
