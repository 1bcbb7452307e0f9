"""Every response says which instance produced it, whatever kind of response it is."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.servers import Server, run_server
from tests.sse import stream_events

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "who are you?"}]}


@pytest.fixture(scope="module")
def pair():
    with run_server(["--instance-id", "alpha"]) as a, run_server(["--instance-id", "beta"]) as b:
        yield a, b


def _every_kind(server: Server) -> list[httpx.Response]:
    base = server.url
    return [
        httpx.get(f"{base}/"),
        httpx.get(f"{base}/health"),
        httpx.get(f"{base}/llmsim/stats"),
        httpx.get(f"{base}/v1/models"),
        httpx.get(f"{base}/v1/models/gpt-4o"),
        httpx.get(f"{base}/v1/models/nope"),
        httpx.post(f"{base}/v1/chat/completions", json=CHAT),
        httpx.post(f"{base}/v1/chat/completions", json={**CHAT, "model": "nope"}),
        httpx.post(f"{base}/v1/chat/completions", content=b"{oops"),
        httpx.get(f"{base}/no/such/route"),
        httpx.put(f"{base}/health"),
    ]


def test_every_response_kind_carries_its_instance(pair) -> None:
    for server, instance in zip(pair, ("alpha", "beta"), strict=True):
        responses = _every_kind(server)
        assert {r.status_code for r in responses} >= {200, 400, 404, 405}
        for response in responses:
            assert response.headers["x-llmsim-instance"] == instance, response.request.url
            assert response.headers["x-request-id"]
        root, health, stats = (r.json() for r in responses[:3])
        assert root["instance"] == health["instance"] == stats["instance"] == instance
        assert root["name"] == "llmsim" and "/v1/chat/completions" in root["endpoints"]
        assert health["status"] == "healthy" and health["uptime_s"] >= 0
        assert responses[6].json()["system_fingerprint"] == instance
        headers, chunks, _ = stream_events(server.url, {**CHAT, "stream": True})
        assert headers["x-llmsim-instance"] == instance
        assert {c["system_fingerprint"] for c in chunks} == {instance}


def test_request_id_echoed_or_generated(pair) -> None:
    server = pair[0]
    mine = httpx.get(f"{server.url}/health", headers={"x-request-id": "trace-123"})
    assert mine.headers["x-request-id"] == "trace-123"
    first = httpx.get(f"{server.url}/health").headers["x-request-id"]
    second = httpx.get(f"{server.url}/health").headers["x-request-id"]
    assert first != second and first.startswith("req_")


def test_stats_count_requests_by_endpoint_and_status(pair) -> None:
    server = pair[1]
    before = httpx.get(f"{server.url}/llmsim/stats").json()
    httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
    httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "n": 0})
    httpx.get(f"{server.url}/definitely/missing")
    after = httpx.get(f"{server.url}/llmsim/stats").json()
    chat_before = before["requests"].get("/v1/chat/completions", {})
    chat_after = after["requests"]["/v1/chat/completions"]
    assert chat_after["200"] == chat_before.get("200", 0) + 1
    assert chat_after["400"] == chat_before.get("400", 0) + 1
    assert after["requests"]["other"]["404"] >= 1
    assert after["requests_total"] == before["requests_total"] + 4  # the first stats call counts too
    assert after["in_flight"] == 1  # this very request


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--instance-id", "from-flag"],
            {"LLMSIM_INSTANCE_ID": "from-env", "POD_NAME": "pod-1"},
            "from-flag",
        ),
        ([], {"LLMSIM_INSTANCE_ID": "from-env", "POD_NAME": "pod-1"}, "from-env"),
        ([], {"POD_NAME": "pod-1"}, "pod-1"),
        ([], {}, None),
    ],
)
def test_instance_id_resolution_order(args, env, expected) -> None:
    clean = {"LLMSIM_INSTANCE_ID": "", "POD_NAME": "", "HOSTNAME": "", "LLMSIM_HOSTNAME": ""} | env
    with run_server(args, env=clean) as server:
        got = httpx.get(f"{server.url}/health").json()["instance"]
    assert got == (expected or f"{socket.gethostname()}:{server.port}")


def test_settings_from_env_and_config_file(tmp_path) -> None:
    config = tmp_path / "llmsim.toml"
    config.write_text('models = ["model-a", "model-b"]\nresponse_mode = "fixed"\nfixed_text = "from file"\n')
    env = {"LLMSIM_CONFIG": str(config), "LLMSIM_FIXED_TEXT": "from env"}
    with run_server(["--instance-id", "cfg"], env=env) as server:
        models = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "model-a", "messages": [{"role": "user", "content": "x"}]},
        ).json()
    assert models == ["model-a", "model-b"]
    assert reply["choices"][0]["message"]["content"] == "from env"  # env beats the file
    # A flag beats the env, and LLMSIM_MODELS takes a comma list.
    with run_server(
        ["--fixed-text", "from flag", "--response-mode", "fixed"], env={"LLMSIM_MODELS": "m1, m2"}
    ) as server:
        models = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "m2", "messages": [{"role": "user", "content": "x"}]},
        ).json()
    assert models == ["m1", "m2"]
    assert reply["choices"][0]["message"]["content"] == "from flag"
    assert json.dumps(reply)  # unknown tokenizer still yields a complete body
    assert reply["usage"]["completion_tokens"] > 0
