"""`llmsim probe --api anthropic` and `llmsim check --api anthropic` (issue 13): Anthropic Messages
traffic against real instances, and the Anthropic readers on crafted answers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from llmsim_cluster import apis, check, gateway_args, responses
from llmsim_cluster import probe as probe_cli
from tests.nginx import run_nginx, upstream
from tests.servers import Server, run_server

IDS = ("an-1", "an-2")


@pytest.fixture(scope="module")
def sims() -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(run_server(["--instance-id", name])) for name in IDS]


def run_probe(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = probe_cli.main([*args, "--api", "anthropic", "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, json.loads(captured.out)


def rows_of(report: dict) -> dict[str, dict]:
    return {r["instance"]: r for r in report["instances"]}


# --- probe against real instances --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_identity_from_the_body_when_the_gateway_hides_the_header(capsys, sims, tmp_path, stream) -> None:
    # No journals (--instances 2) and no header: who answered comes from llmsim_instance alone, in
    # the message or in message_start.
    hide = "proxy_hide_header x-llmsim-instance;"
    with run_nginx(tmp_path, upstream([s.port for s in sims]), extra=hide) as url:
        args = ["-n", "20", "-c", "4", "--instances", "2", *(["--stream"] if stream else [])]
        code, report = run_probe(capsys, url, *args)
    assert code == 0, report["verdict"]
    assert report["error_rate"] == 0 and report["distribution"]["passed"]
    assert report["distribution"]["counts"] == {"an-1": 10, "an-2": 10}
    if stream:
        assert all(r["ttft_ms"]["p50"] is not None for r in report["instances"])


def test_each_instance_probed_directly(capsys, sims) -> None:
    for name, sim in zip(IDS, sims, strict=True):  # the URL has no path: /v1/messages is appended
        code, report = run_probe(capsys, sim.url, "-n", "6", "--instances", sim.url, "--stream")
        assert code == 0, report["verdict"]
        [row] = report["instances"]
        assert (row["instance"], row["answers"], row["attempts"]) == (name, 6, 6)
        assert report["distribution"]["counts"] == {name: 6}
        assert [j["instance"] for j in report["journals"] if j["read"]] == [name]


@pytest.mark.parametrize(
    ("fault", "kind", "sample"),
    [
        ("disconnect;after=2", responses.STREAM_ERROR, "Overloaded"),  # event: error, then the drop
        ("malformed;after=2", responses.MALFORMED, '"delta":{"ty'),
    ],
)
def test_broken_streams_fail_by_kind(capsys, sims, fault, kind, sample) -> None:
    sim = sims[0]
    args = ["--stream", "-n", "6", "--instances", sim.url, "-H", f"x-llmsim-fault: {fault}"]
    code, report = run_probe(capsys, sim.url, *args)
    assert code == 1
    assert report["failures"] == {kind: 6}
    assert sample in report["error_samples"][0]["message"]
    assert rows_of(report)["an-1"]["errors"] == {kind: 6}


def test_error_shown_with_anthropics_message(capsys, sims) -> None:
    sim = sims[1]
    args = ["-n", "4", "--instances", sim.url, "-H", "x-llmsim-fault: server_error"]
    code, report = run_probe(capsys, sim.url, *args)
    assert code == 1
    [sample] = report["error_samples"]
    assert sample["status"] == 500 and sample["count"] == 4 and sample["from"] == {"an-2": 4}
    assert sample["message"] == "Internal server error"  # error.message of {"type": "error", ...}


# --- check -------------------------------------------------------------------------------------


def test_check_usage_and_failover(capsys, sims) -> None:
    # No gateway: the URL is the first instance itself, the one failover-5xx breaks.
    instances = ",".join(s.url for s in sims)
    argv = [sims[0].url, "--api", "anthropic", "--instances", instances, "-n", "12", "--heal-wait", "1"]
    argv += ["--scenarios", "usage,failover-5xx,headers", "--api-key", "sk-ant-client-0123456789", "--json"]
    capsys.readouterr()
    code = check.main(argv)
    scores = {s["scenario"]: s for s in json.loads(capsys.readouterr().out)["scores"]}
    assert code == 1
    usage = scores["usage"]
    assert usage["verdict"] == "pass", usage
    assert usage["figures"]["compared"] == 12 and usage["figures"]["mismatched"] == 0
    failover = scores["failover-5xx"]
    assert failover["verdict"] == "fail"  # nothing in front to retry
    assert failover["figures"]["client_errors"] == 12 and failover["figures"]["attempts_on_target"] == 12
    assert any("Internal server error" in s for s in failover["samples"])
    seen = scores["headers"]["figures"]
    assert {"anthropic-version", "x-api-key", "authorization"} <= set(seen["arrived"])
    assert seen["client_key_reached_instance"] is True


# --- arguments ---------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    gateway_args.add_arguments(p)
    return p.parse_args(["http://gw", *argv])


def test_arguments() -> None:
    args = parse("--api", "anthropic", "--api-key", "k1", "-H", "Anthropic-Version: 2024-01-01")
    api = gateway_args.chosen_api(args)
    assert api is apis.ANTHROPIC and gateway_args.chosen_model(args) == "claude-sonnet-4-5"
    assert gateway_args.target_url("http://gw/", api) == "http://gw/v1/messages"
    assert (
        gateway_args.target_url("http://gw/anthropic/v1/messages", api) == "http://gw/anthropic/v1/messages"
    )
    assert gateway_args.headers(args.header, args.api_key, api) == {
        "Anthropic-Version": "2024-01-01",  # -H wins over the API's own, whatever its case
        "Authorization": "Bearer k1",
        "x-api-key": "k1",
    }
    assert gateway_args.headers([], None, api) == {"anthropic-version": "2023-06-01"}
    args = parse("--api-key", "k1", "--model", "m")
    assert gateway_args.chosen_api(args) is apis.OPENAI and gateway_args.chosen_model(args) == "m"
    assert gateway_args.headers(args.header, args.api_key) == {"Authorization": "Bearer k1"}
    assert gateway_args.chosen_model(parse()) == "gpt-4o-mini"
    body = apis.ANTHROPIC.body("claude-haiku-4-5", 3, "pr-1-000003", True, True)
    assert body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "llmsim probe request 3 llmsim-trace:pr-1-000003"}],
        "stream": True,
    }


# --- the readers, on crafted answers -----------------------------------------------------------


def sse(*events: tuple[str, dict | str]) -> list[bytes]:
    lines = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        lines += [f"event: {name}\n".encode(), f"data: {payload}\n".encode(), b"\n"]
    return lines


START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "type": "message",
            "content": [],
            "llmsim_instance": "an-9",
            "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1},
        },
    },
)
TEXT = ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"text": "hi"}})
DELTA = (
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
)
STOP = ("message_stop", {"type": "message_stop"})


def judged(lines: list[bytes]) -> responses.MessageStreamJudge:
    judge = apis.ANTHROPIC.stream_judge()
    assert isinstance(judge, responses.MessageStreamJudge)
    for line in lines:
        judge.feed(line)
    return judge


def test_stream_judge() -> None:
    whole = judged(sse(START, ("ping", {"type": "ping"}), TEXT, DELTA, STOP))
    assert whole.verdict() == (None, None)
    assert whole.instance == "an-9"
    assert whole.usage == {"prompt_tokens": 10, "completion_tokens": 5}
    assert judged(sse(START, TEXT, DELTA)).verdict()[0] == responses.TRUNCATED
    assert judged(sse(START, TEXT, STOP)).verdict()[0] == responses.NO_FINISH
    assert judged(sse(START, DELTA, STOP, TEXT)).verdict()[0] == responses.MALFORMED
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert judged(sse(START, ("error", error), DELTA, STOP)).verdict() == (
        responses.STREAM_ERROR,
        "Overloaded",
    )
    assert judged(sse(START, ("error", "not json"))).verdict()[0] == responses.STREAM_ERROR
    cut = judged(sse(START, TEXT))
    cut.cut("reset")
    assert cut.verdict() == (responses.CUT, "after 2 events: reset")


def test_body_judge() -> None:
    body = {
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "llmsim_instance": "an-9",
        "usage": {"input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 3},
    }
    verdict = apis.ANTHROPIC.judge_body(json.dumps(body).encode())
    assert (verdict.failure, verdict.instance) == (None, "an-9")
    assert verdict.usage == {"prompt_tokens": 6, "completion_tokens": 3}
    error = b'{"type":"error","error":{"type":"api_error","message":"Internal server error"}}'
    assert apis.ANTHROPIC.judge_body(error).failure == responses.STREAM_ERROR
    assert responses.error_message(error) == "Internal server error"
    assert apis.ANTHROPIC.judge_body(b'{"type":"message"}').failure == responses.MALFORMED
    assert apis.ANTHROPIC.judge_body(b'{"choices": []}').failure == responses.MALFORMED
    assert apis.ANTHROPIC.judge_body(b"{not json").failure == responses.MALFORMED
