"""llmsim.limits: OpenAI's duration format, token-bucket arithmetic, headers and 429s."""

from __future__ import annotations

import pytest

from llmsim.errors import APIError
from llmsim.limits import SWEEP_INTERVAL, RateLimits, estimate_tokens, format_duration
from llmsim.surfaces.openai_wire import limit_headers
from tests.openai_spec import rendered


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.012, "12ms"),
        (0.547, "547ms"),
        (0.9996, "1s"),
        (1, "1s"),
        (1.78, "1.78s"),
        (33.023, "33.023s"),
        (60, "1m0s"),
        (172.8, "2m52.8s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text


def test_estimate_tokens() -> None:
    assert estimate_tokens(100, 50) == 150
    assert estimate_tokens(100, 50, n=3) == 250
    assert estimate_tokens(100, None) == 116
    assert estimate_tokens(100, None, default_max_tokens=0) == 100


def _headers(state) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in limit_headers(state)}


def _openai(err: APIError) -> tuple[dict, dict[str, str]]:
    """The envelope's error and the headers, as OpenAI's wire renders the neutral error."""
    _, error, headers = rendered(err)
    return error, headers


def test_headers_like_openai() -> None:
    limits = RateLimits(rpm=5000, tpm=5_000_000)
    state = limits.check("k", None, 1, now=100.0)
    assert _headers(state) == {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",  # as on a real OpenAI response with these numbers
        "x-ratelimit-limit-tokens": "5000000",
        "x-ratelimit-remaining-tokens": "4999999",
        "x-ratelimit-reset-tokens": "0s",
    }


def test_request_limit_then_refill() -> None:
    limits = RateLimits(rpm=10)
    for i in range(10):
        state = limits.check("k", None, 1000, now=0.0)
        assert state.remaining_requests == 9 - i
    assert _headers(state)["x-ratelimit-reset-requests"] == "1m0s"
    assert "x-ratelimit-limit-tokens" not in _headers(state)
    with pytest.raises(APIError) as info:
        limits.check("k", None, 1, now=0.0)
    err = info.value
    error, headers = _openai(err)
    assert (err.status, error["code"], error["type"]) == (429, "rate_limit_exceeded", "requests")
    assert error["message"] == (
        "Rate limit reached for gpt-4o in organization org-llmsim on requests per min (RPM): "
        "Limit 10, Used 10, Requested 1. Please try again in 6s. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )
    assert headers["retry-after"] == "6" and headers["retry-after-ms"] == "6000"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    # One request refills every 6 s; another identity has its own bucket.
    assert limits.check("k", None, 1, now=6.0).remaining_requests == 0
    assert limits.check("other", None, 1, now=6.0).remaining_requests == 9


def test_token_limit_refuses_without_taking_anything() -> None:
    limits = RateLimits(rpm=100, tpm=1000)
    limits.check("k", None, 900, now=0.0)
    with pytest.raises(APIError) as info:
        limits.check("k", None, 200, now=0.0, model="gpt-4o-mini", org="org-abc")
    error, _ = _openai(info.value)
    assert error["type"] == "tokens"
    assert (
        "gpt-4o-mini in organization org-abc on tokens per min (TPM): Limit 1000, Used 900, Requested 200"
        in (error["message"])
    )
    assert "Please try again in 6s." in error["message"]  # 100 tokens short at 1000/60 per second
    state = limits.check("k", None, 100, now=0.0)
    assert (state.remaining_requests, state.remaining_tokens) == (98, 0)
    assert _headers(state)["x-ratelimit-reset-tokens"] == "1m0s"


def test_request_larger_than_the_limit() -> None:
    limits = RateLimits(tpm=1000)
    with pytest.raises(APIError) as info:
        limits.check("k", None, 1001, now=0.0)
    error, headers = _openai(info.value)
    assert error["message"].startswith("Request too large for gpt-4o") and "retry-after" not in headers


def test_tiers() -> None:
    limits = RateLimits(rpm=100, per_tier={"free": (1, 500)})
    limits.check("free-key", "free", 10, now=0.0)
    with pytest.raises(APIError):
        limits.check("free-key", "free", 10, now=0.0)
    state = limits.check("paid", "unknown-tier", 10, now=0.0)
    assert (state.limit_requests, state.limit_tokens) == (100, None)


def test_unlimited_and_reset_and_eviction() -> None:
    assert limit_headers(RateLimits().check("k", None, 10**9, now=0.0)) == []
    limits = RateLimits(rpm=60)
    limits.check("busy", None, 1, now=0.0)
    limits.check("idle", None, 1, now=0.0)
    assert len(limits) == 2
    limits.check("busy", None, 1, now=SWEEP_INTERVAL - 0.5)  # refilled, then used again
    limits.check("new", None, 1, now=SWEEP_INTERVAL + 0.1)  # sweep: "idle" is full again
    assert len(limits) == 2
    limits.reset()
    assert len(limits) == 0


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        RateLimits(rpm=0)
