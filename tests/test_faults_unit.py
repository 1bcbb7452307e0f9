"""llmsim.faults: header parsing, selection order, counts and the OpenAI-shaped errors."""

from __future__ import annotations

import pytest

from llmsim.errors import APIError
from llmsim.faults import (
    DEFAULT_AFTER,
    IMMEDIATE,
    MID_STREAM,
    TIMING,
    Fault,
    FaultPolicy,
    FaultType,
    parse_header,
)
from tests.openai_spec import rendered


def _error(err: APIError) -> dict:
    return rendered(err)[1]


def _headers(err: APIError) -> dict[str, str]:
    return rendered(err)[2]


def test_every_type_has_exactly_one_kind() -> None:
    assert set(FaultType) == IMMEDIATE | MID_STREAM | TIMING
    assert not (IMMEDIATE & MID_STREAM or IMMEDIATE & TIMING or MID_STREAM & TIMING)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("server_error", Fault(FaultType.server_error)),
        (b"rate_limit", Fault(FaultType.rate_limit)),
        ("Server_Error ; status=504", Fault(FaultType.server_error, status=504)),
        ("disconnect", Fault(FaultType.disconnect, after=DEFAULT_AFTER)),
        ("malformed;after=0", Fault(FaultType.malformed, after=0)),
        ("timeout;hang=2.5", Fault(FaultType.timeout, hang=2.5)),
        ("slow;factor=3", Fault(FaultType.slow, factor=3.0)),
    ],
)
def test_parse_header(value, expected) -> None:
    assert parse_header(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("explode", "valid types: rate_limit, server_error"),
        ("server_error;after=3", "does not take"),
        ("disconnect;status=500", "does not take"),
        ("disconnect;after=x", "must be a number"),
        ("disconnect;after=-1", "must be positive"),
        ("server_error;status=200", "between 400 and 599"),
        ("slow;factor=0", "must be positive"),
        ("server_error;status", "does not take"),
    ],
)
def test_parse_header_rejects(value, fragment) -> None:
    with pytest.raises(APIError) as info:
        parse_header(value)
    err = info.value
    assert err.status == 400 and err.param == "x-llmsim-fault" and fragment in err.message


def test_header_wins_and_does_not_use_up_fail_first() -> None:
    policy = FaultPolicy(fail_first=1)
    assert policy.pick("bad_gateway").type is FaultType.bad_gateway
    assert policy.pick(None).type is FaultType.server_error  # the default type
    assert policy.pick(None) is None


def test_a_mid_stream_fault_is_not_drawn_for_a_whole_body() -> None:
    """Nothing to cut in a non-streamed answer: no fault, and fail-first is kept for a stream."""
    policy = FaultPolicy(types=["disconnect"], fail_first=1)
    assert policy.pick(None, stream=False) is None
    assert policy.pick("malformed", stream=False) is None
    assert policy.pick(None, stream=True).type is FaultType.disconnect
    assert policy.pick(None, stream=True) is None


def test_fail_first_then_succeed_and_configure_restarts_it() -> None:
    policy = FaultPolicy(types=["overloaded"], fail_first=3)
    assert [f and f.type for f in (policy.pick(None) for _ in range(5))] == [FaultType.overloaded] * 3 + [
        None,
        None,
    ]
    policy.configure(fail_first=1)
    assert policy.pick(None).type is FaultType.overloaded
    assert policy.snapshot() == {
        "failure_rate": 0.0,
        "failure_types": ["overloaded"],
        "fail_first_remaining": 0,
    }


def test_random_rate_is_seeded_and_close_to_the_rate() -> None:
    types = ["rate_limit", "disconnect"]
    first = FaultPolicy(rate=0.3, types=types, seed=7)
    second = FaultPolicy(rate=0.3, types=types, seed=7)
    a = [first.pick(None) for _ in range(2000)]
    assert a == [second.pick(None) for _ in range(2000)]
    hits = [f for f in a if f]
    assert 500 < len(hits) < 700
    assert {f.type for f in hits} == {FaultType.rate_limit, FaultType.disconnect}
    assert all(f.after == DEFAULT_AFTER for f in hits if f.type is FaultType.disconnect)
    assert FaultPolicy(rate=0.0).pick(None) is None and FaultPolicy(rate=1.0).pick(None) is not None


def test_policy_defaults_reach_parsed_and_drawn_faults() -> None:
    policy = FaultPolicy(types=["timeout", "slow", "malformed"], after=5, hang=1.5, slow_factor=4)
    assert policy.pick("timeout").hang == 1.5
    assert policy.pick("slow").factor == 4
    assert policy.pick("malformed").after == 5
    assert {f.type: f for f in policy._faults}[FaultType.malformed].after == 5


def test_configure_validates() -> None:
    policy = FaultPolicy()
    for kwargs in ({"rate": 1.5}, {"types": ["nope"]}, {"fail_first": -1}):
        with pytest.raises(ValueError):
            policy.configure(**kwargs)


def test_retry_after_comes_from_the_request_then_the_fault_then_the_setting() -> None:
    policy = FaultPolicy(retry_after=2)
    fault = parse_header("rate_limit;retry_after=7.5")
    assert _headers(policy.error_for(fault))["retry-after"] == "8"  # whole seconds, rounded up
    assert _headers(policy.error_for(fault))["retry-after-ms"] == "7500"
    assert _headers(policy.error_for(fault))["x-ratelimit-reset-requests"] == "7.5s"
    assert _headers(policy.error_for(fault, retry_after=30))["retry-after"] == "30"
    no_wait = policy.error_for(parse_header("overloaded;retry_after=0"))
    assert no_wait.status == 503 and "retry-after" not in _headers(no_wait)
    assert "retry-after" not in _headers(
        policy.error_for(Fault(FaultType.server_error))
    )  # a 500 says nothing
    with pytest.raises(APIError):
        parse_header("rate_limit;retry_after=7200")


def test_errors_as_openai_words_them() -> None:
    policy = FaultPolicy(retry_after=2)
    rate = policy.error_for(Fault(FaultType.rate_limit), model="gpt-4o-mini")
    assert rate.status == 429
    assert {k: v for k, v in _headers(rate).items() if k not in ("content-type", "content-length")} == {
        "retry-after": "2",
        "retry-after-ms": "2000",
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    assert _error(rate)["type"] == "requests" and _error(rate)["code"] == "rate_limit_exceeded"
    assert _error(rate)["message"].startswith("Rate limit reached for gpt-4o-mini in organization org-llmsim")

    server = _error(policy.error_for(Fault(FaultType.server_error)))
    assert server["message"].endswith("Sorry about that!") and server["type"] == "server_error"
    assert policy.error_for(Fault(FaultType.overloaded)).status == 503
    assert _headers(policy.error_for(Fault(FaultType.overloaded)))["retry-after-ms"] == "2000"
    assert _error(policy.error_for(Fault(FaultType.bad_gateway)))["message"] == "Bad gateway."

    context = policy.error_for(Fault(FaultType.context_length), prompt_tokens=200_000)
    body = _error(context)
    assert context.status == 400 and body["param"] == "messages" and body["code"] == "context_length_exceeded"
    assert "maximum context length is 128000 tokens" in body["message"] and "200000 tokens" in body["message"]

    auth = policy.error_for(Fault(FaultType.auth))
    assert auth.status == 401 and _error(auth)["code"] == "invalid_api_key"


def test_status_override_and_non_immediate_types() -> None:
    policy = FaultPolicy()
    assert policy.error_for(parse_header("server_error;status=504")).status == 504
    with pytest.raises(ValueError):
        policy.error_for(Fault(FaultType.disconnect))
    assert Fault(FaultType.auth).immediate and Fault(FaultType.malformed).mid_stream
