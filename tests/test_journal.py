"""The request journal (issue 12): what an instance received and did, by trace token."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import httpx
import pytest

from llmsim.journal import MAX_HEADER_BYTES, Journal, trace_in_body, valid_trace
from tests.servers import Server, open_request, run_server, wait_until

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Server]:
    with run_server(["--instance-id", "sim-j"]) as server:
        yield server


def _trace() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def chat(server: Server, text: str = "hi", headers: dict | None = None, **extra) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=TIMEOUT)


def journal(server: Server, **params) -> dict:
    response = httpx.get(f"{server.url}/llmsim/requests", params=params, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def entries(server: Server, trace: str) -> list[dict]:
    return journal(server, trace=trace)["entries"]


def test_trace_from_the_header_or_the_prompt(sim: Server) -> None:
    run = _trace()
    by_header = chat(sim, headers={"x-llmsim-trace": f"{run}-1"})
    by_prompt = chat(sim, text=f"please answer llmsim-trace:{run}-2 thanks")
    chat(sim, text="not traced")
    assert by_header.status_code == by_prompt.status_code == 200
    found = entries(sim, run)
    assert [e["trace"] for e in found] == [f"{run}-1", f"{run}-2"]  # a prefix match, oldest first
    first = found[0]
    assert first["request_id"] == by_header.headers["x-request-id"]
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["model"] == "gpt-4o" and first["stream"] is False
    assert first["status"] == 200 and first["ended"] == "completed" and first["fault"] is None
    assert first["headers"]["x-llmsim-trace"] == f"{run}-1" and first["duration_ms"] >= 0
    usage = by_header.json()["usage"]
    assert first["usage"] == {k: usage[k] for k in ("prompt_tokens", "completion_tokens")}
    assert journal(sim, trace=f"{run}-1")["entries"] == [first]


def test_streams_count_their_events_and_how_they_ended(sim: Server) -> None:
    run = _trace()
    with httpx.stream(
        "POST",
        f"{sim.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}], "stream": True},
        headers={"x-llmsim-trace": f"{run}-ok"},
        timeout=TIMEOUT,
    ) as response:
        events = sum(1 for line in response.iter_lines() if line.startswith("data: "))
    with pytest.raises(httpx.RemoteProtocolError):
        chat(
            sim, headers={"x-llmsim-trace": f"{run}-cut", "x-llmsim-fault": "disconnect;after=2"}, stream=True
        )
    ok, cut = entries(sim, run)
    assert ok["stream"] is True and ok["ended"] == "completed" and ok["events"] == events
    assert cut["fault"] == "disconnect" and cut["ended"] == "cut" and cut["events"] == 2


def test_errors_faults_and_retry_after(sim: Server) -> None:
    run = _trace()
    limited = chat(
        sim, headers={"x-llmsim-trace": f"{run}-429", "x-llmsim-fault": "rate_limit;retry_after=4"}
    )
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "4" and limited.headers["retry-after-ms"] == "4000"
    assert limited.headers["x-ratelimit-reset-requests"] == "4s"
    bare = chat(sim, headers={"x-llmsim-trace": f"{run}-503", "x-llmsim-fault": "overloaded;retry_after=0"})
    assert bare.status_code == 503 and "retry-after" not in bare.headers
    told = chat(sim, headers={"x-llmsim-fault": "overloaded", "x-llmsim-retry-after": "2.5"})
    assert told.headers["retry-after"] == "3" and told.headers["retry-after-ms"] == "2500"
    # A mid-stream fault asked for a whole body has nothing to act on: a normal answer, not injected.
    whole = chat(sim, headers={"x-llmsim-trace": f"{run}-whole", "x-llmsim-fault": "malformed"})
    assert whole.status_code == 200
    by_trace = {e["trace"]: e for e in entries(sim, run)}
    assert by_trace[f"{run}-429"]["fault"] == "rate_limit" and by_trace[f"{run}-429"]["ended"] == "error"
    assert by_trace[f"{run}-503"]["status"] == 503
    assert by_trace[f"{run}-whole"]["fault"] is None and by_trace[f"{run}-whole"]["ended"] == "completed"


def test_in_flight_then_client_gone_with_its_plan(sim: Server) -> None:
    trace = _trace()
    sock = open_request(sim, {"x-llmsim-trace": trace, "x-llmsim-ttft-ms": "20000"})
    try:
        entry = wait_until(lambda: entries(sim, trace), what="the request to be journaled")[0]
        assert entry["ended"] == "in_flight" and entry["status"] is None
    finally:
        sock.close()
    gone = wait_until(
        lambda: [e for e in entries(sim, trace) if e["ended"] != "in_flight"], what="the request to end"
    )[0]
    assert gone["ended"] == "client_gone" and gone["status"] == 499
    assert gone["plan"]["ttft_ms"] == pytest.approx(20000, abs=1)


def test_auth_values_are_masked_and_control_traffic_is_left_out(sim: Server) -> None:
    trace = _trace()
    secret = "sk-" + uuid.uuid4().hex
    chat(sim, headers={"x-llmsim-trace": trace, "authorization": f"Bearer {secret}", "x-api-key": secret})
    found = journal(sim, trace=trace)
    shown = str(found)
    assert secret not in shown
    headers = found["entries"][0]["headers"]
    assert headers["authorization"].startswith("Bearer sk-") and "*" in headers["authorization"]
    assert "*" in headers["x-api-key"]
    assert all(not e["path"].startswith("/llmsim/") for e in journal(sim, limit=10_000)["entries"])


def test_filters_and_bad_parameters(sim: Server) -> None:
    run = _trace()
    for i in range(3):
        chat(sim, headers={"x-llmsim-trace": f"{run}-{i}"})
    everything = entries(sim, run)
    assert [e["trace"] for e in journal(sim, trace=run, limit=2)["entries"]] == [f"{run}-1", f"{run}-2"]
    since = everything[1]["at"]
    assert [e["trace"] for e in journal(sim, trace=run, since=since)["entries"]] == [f"{run}-1", f"{run}-2"]
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    for params in ({"limit": "-1"}, {"limit": "x"}, {"limit": "100000"}, {"since": "nan"}, {"trace": "a b"}):
        response = httpx.get(f"{sim.url}/llmsim/requests", params=params, timeout=TIMEOUT)
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == next(iter(params))


def test_the_ring_is_bounded_and_reset_clears_it() -> None:
    with run_server(["--journal-size", "3"]) as server:
        run = _trace()
        for i in range(5):
            chat(server, headers={"x-llmsim-trace": f"{run}-{i}"})
        found = journal(server)
        assert found["size"] == 3 and found["total"] == 6  # the health check that found it ready
        assert [e["trace"] for e in found["entries"]] == [f"{run}-2", f"{run}-3", f"{run}-4"]
        assert httpx.post(f"{server.url}/llmsim/reset", timeout=TIMEOUT).status_code == 200
        assert journal(server)["entries"] == []


def test_the_admin_token_guards_it() -> None:
    with run_server(["--admin-token", "tok-" + uuid.uuid4().hex]) as server:
        response = httpx.get(f"{server.url}/llmsim/requests", timeout=TIMEOUT)
        assert response.status_code == 401


def test_trace_tokens_are_parsed_strictly() -> None:
    assert trace_in_body(b'{"content":"x llmsim-trace:ab.C_-9 y"}') == b"ab.C_-9"
    assert trace_in_body(b'{"content":"llmsim-trace: spaced"}') is None
    assert trace_in_body(b"llmsim-trace:" + b"a" * 100) == b"a" * 64
    assert valid_trace(b"ok-1") == b"ok-1" and valid_trace(b"bad token") is None and valid_trace(b"") is None


def test_hostile_headers_are_clipped() -> None:
    ring = Journal(2)
    headers = [(b"x-big-%d" % i, b"v" * 1000) for i in range(100)]
    ring.close(
        ring.open(b"req", None, {"headers": headers, "method": "GET", "path": "/"}), 200, "completed", 0.001
    )
    assert len(ring.entries[0][6]) == MAX_HEADER_BYTES  # the joined headers, clipped
    assert len(ring.query()["entries"][0]["headers"]) < 10
    for _ in range(5):
        ring.close(
            ring.open(b"req", None, {"headers": [(b"a", b"b")], "method": "GET", "path": "/"}),
            200,
            "completed",
            0.001,
        )
    assert len(ring.entries) == 2 and ring.total == 6 and not ring.in_flight


def test_finished_entries_cost_the_garbage_collector_nothing() -> None:
    ring = Journal(10)
    scope = {"headers": [(b"user-agent", b"x"), (b"x-llmsim-trace", b"t-1")], "method": "POST", "path": "/v1"}
    ring.close(ring.open(b"req", b"t-1", scope), 200, "completed", 0.001)
    gc.collect()
    assert not gc.is_tracked(ring.entries[0])  # atoms only: untracked
    (shown,) = ring.query()["entries"]
    assert shown["headers"] == {"user-agent": "x", "x-llmsim-trace": "t-1"} and shown["usage"] is None
    assert shown["trace"] == "t-1" and shown["ended"] == "completed" and shown["duration_ms"] >= 0
