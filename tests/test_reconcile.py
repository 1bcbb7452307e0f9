"""Reconciliation of client outcomes with instance journals, and reading responses, on synthetic data."""

from __future__ import annotations

from llmsim_cluster import responses
from llmsim_cluster.reconcile import GATEWAY, UNKNOWN, Sent, reconcile

T0 = 1_700_000_000.0


def entry(trace: str, at: float, status: int | None, ended: str = "completed", ms: float = 10.0, fault=None):
    return {
        "trace": trace,
        "at": T0 + at,
        "status": status,
        "ended": ended,
        "duration_ms": ms,
        "fault": fault,
    }


def sent(trace: str, ok: bool = True, status: int | None = 200, seen: str | None = None) -> Sent:
    return Sent(trace, T0, ok, status, seen)


def test_retry_on_another_instance_is_failover_and_counted_per_instance() -> None:
    journals = {
        "sim-1": [entry("t1", 0.000, 500, "error", fault="server_error")],
        "sim-2": [entry("t1", 0.020, 200), entry("t2", 0.0, 200)],
    }
    rec = reconcile([sent("t1"), sent("t2")], journals)
    story = rec.stories["t1"]
    assert [a.instance for a in story.attempts] == ["sim-1", "sim-2"]
    assert story.answered_by == "sim-2" and story.extra_attempts == 1 and story.failover and not story.hedged
    assert rec.retried == 1 and rec.failovers == 1 and rec.hedged == 0 and rec.retries == {1: 1, 0: 1}
    assert rec.tallies["sim-1"].attempts == 1 and rec.tallies["sim-1"].answers == 0
    assert rec.tallies["sim-1"].errors == {"500": 1} and rec.tallies["sim-1"].faults == {"server_error": 1}
    assert rec.tallies["sim-2"].attempts == 2 and rec.tallies["sim-2"].answers == 2


def test_retry_on_the_same_instance_is_not_failover() -> None:
    rec = reconcile([sent("t1")], {"sim-1": [entry("t1", 0.0, 500, "error"), entry("t1", 0.05, 200)]})
    assert rec.stories["t1"].extra_attempts == 1 and not rec.stories["t1"].failover
    assert rec.failovers == 0 and rec.retried == 1


def test_hedge_overlapping_attempts() -> None:
    journals = {
        "sim-1": [entry("t1", 0.000, 200, "client_gone", ms=500)],
        "sim-2": [entry("t1", 0.100, 200, ms=50)],
    }
    rec = reconcile([sent("t1", seen="sim-2")], journals)
    story = rec.stories["t1"]
    assert story.hedged and story.answered_by == "sim-2"
    assert rec.hedged == 1 and rec.retried == 0
    assert rec.tallies["sim-1"].answers == 0 and rec.tallies["sim-1"].errors == {"client_gone": 1}
    # Without an identity in the response, the attempt that completed is the answer.
    assert reconcile([sent("t1")], journals).stories["t1"].answered_by == "sim-2"


def test_gateway_originated_error() -> None:
    rec = reconcile([sent("t1", ok=False, status=502)], {"sim-1": [], "sim-2": []})
    assert rec.stories["t1"].blamed == GATEWAY and rec.gateway_errors == 1 and rec.unseen == 1
    # With a journal missing, nobody can say it was the gateway.
    partial = reconcile([sent("t1", ok=False, status=502)], {"sim-1": []}, complete=False)
    assert partial.stories["t1"].blamed == UNKNOWN and partial.gateway_errors == 0


def test_error_attributed_to_the_instance_that_produced_it_without_identity() -> None:
    # LiteLLM-style: the error body carries no identity, the header was renamed away.
    journals = {"sim-1": [entry("t1", 0, 200)], "sim-2": [entry("t2", 0, 500, "error")]}
    rec = reconcile([sent("t1"), sent("t2", ok=False, status=500)], journals)
    assert rec.stories["t2"].blamed == "sim-2" and rec.tallies["sim-2"].blamed == 1


def test_failover_that_still_fails_blames_the_last_failing_instance() -> None:
    journals = {"sim-1": [entry("t1", 0, 500, "error")], "sim-2": [entry("t1", 0.02, 503, "error")]}
    rec = reconcile([sent("t1", ok=False, status=502)], journals)
    assert rec.stories["t1"].blamed == "sim-2" and rec.failovers == 1


def test_stream_broken_on_the_way_is_the_gateways() -> None:
    rec = reconcile([sent("t1", ok=False, status=200)], {"sim-1": [entry("t1", 0, 200)]})
    assert rec.stories["t1"].blamed == GATEWAY
    cut = reconcile([sent("t1", ok=False, status=200)], {"sim-1": [entry("t1", 0, 200, "cut")]})
    assert cut.stories["t1"].blamed == "sim-1" and cut.tallies["sim-1"].errors == {"cut": 1}


def test_in_flight_attempt_overlaps_everything_after_it() -> None:
    journals = {"sim-1": [entry("t1", 0, None, "in_flight", ms=None)], "sim-2": [entry("t1", 5.0, 200)]}
    assert reconcile([sent("t1")], journals).stories["t1"].hedged


def test_other_traces_are_ignored() -> None:
    rec = reconcile([sent("t1")], {"sim-1": [entry("other", 0, 200), entry("t1", 0, 200)]})
    assert rec.tallies["sim-1"].attempts == 1


# --- reading responses ------------------------------------------------------------------------


def test_identity_from_renamed_headers() -> None:
    assert responses.instance_from_headers([("X-LLMSIM-Instance", "sim-1")]) == "sim-1"
    assert responses.instance_from_headers([("llm_provider-x-llmsim-instance", "sim-2")]) == "sim-2"
    both = [("llm_provider-x-llmsim-instance", "sim-2"), ("x-llmsim-instance", "sim-3")]
    assert responses.instance_from_headers(both) == "sim-3"
    assert responses.instance_from_headers([("x-other", "sim-1")]) is None


def judge(*lines: bytes) -> tuple[str | None, str | None]:
    j = responses.StreamJudge()
    for line in lines:
        j.feed(line)
    return j.verdict()


CHUNK = b'data: {"system_fingerprint":"sim-1","choices":[{"delta":{"content":"x"},"finish_reason":null}]}'
FINAL = b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}'


def test_stream_judged_by_content() -> None:
    assert judge(CHUNK, b"", FINAL, b"", b"data: [DONE]") == (None, None)
    assert judge(CHUNK, b'data: {"id":"x","choices":[{"ind', FINAL, b"data: [DONE]")[0] == responses.MALFORMED
    error = judge(CHUNK, b'data: {"error": {"message": "upstream exploded"}}')
    assert error == (responses.STREAM_ERROR, "upstream exploded")
    assert judge(CHUNK)[0] == responses.TRUNCATED  # ended cleanly: the silent kind
    assert judge(CHUNK, b"data: [DONE]")[0] == responses.NO_FINISH
    j = responses.StreamJudge()
    j.feed(CHUNK)
    j.cut("reset")
    assert j.verdict()[0] == responses.CUT and j.instance == "sim-1"


def test_error_messages() -> None:
    assert responses.error_message(b'{"error": {"message": "Invalid model name"}}') == "Invalid model name"
    assert responses.error_message(b"<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"
    assert responses.judge_body(b'{"choices": [], "system_fingerprint": "sim-4"}').instance == "sim-4"
    assert responses.judge_body(b"{not json").failure == responses.MALFORMED
