"""Requests-per-minute and tokens-per-minute limits, as OpenAI applies them.

Each identity (an API key, or the client address when auth is off) has two token buckets: one of
``rpm`` requests and one of ``tpm`` tokens, each refilling continuously at limit/60 per second.
A request takes one request and its estimated tokens (prompt + max_tokens × n, counted before
generation as OpenAI does); if either bucket is short it is a 429 and nothing is taken.

Every response reports the buckets (:class:`LimitState`) in its surface's headers (OpenAI's
``x-ratelimit-*``: llmsim.surfaces.openai_wire): remaining is the bucket's level rounded down,
reset is the time until the bucket is full again ("resets to its initial state"). That matches real OpenAI responses: limit 5000 and remaining 4999 come with
``x-ratelimit-reset-requests: 12ms`` (1 request × 60 s / 5000). Each instance holds its own
buckets, like separate deployments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmsim.errors import APIError, Kind

# OpenAI does not document what it reserves for a chat request without max_tokens; 16 is the
# legacy completions default (OpenAI's cookbook rate-limit script assumes 15).
DEFAULT_MAX_TOKENS = 16
SWEEP_INTERVAL = 60.0  # seconds between sweeps of idle identities


def format_duration(seconds: float) -> str:
    """OpenAI's reset format, Go's time.Duration rounded to the millisecond.

    Seen on real responses: ``0s``, ``12ms``, ``547ms``, ``1s``, ``33.023s``, ``2m52.8s``, ``6m0s``.
    """
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    whole, frac = divmod(ms, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def estimate_tokens(
    prompt_tokens: int, max_tokens: int | None, n: int = 1, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> int:
    """Tokens a request counts against TPM before generation: prompt + max_tokens × n."""
    return prompt_tokens + (default_max_tokens if max_tokens is None else max_tokens) * max(n, 1)


def parse_tier_limits(spec: str | None) -> dict[str, tuple[int | None, int | None]]:
    """``free=3:40000,tier1=500:`` -> {"free": (3, 40000), "tier1": (500, None)} (RPM:TPM)."""
    tiers: dict[str, tuple[int | None, int | None]] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, sep, pair = item.partition("=")
        rpm, colon, tpm = pair.partition(":")
        if not sep or not colon or not name.strip():
            raise ValueError(f"tier limits are NAME=RPM:TPM, got {item.strip()!r}")
        try:
            tiers[name.strip()] = (int(rpm) if rpm.strip() else None, int(tpm) if tpm.strip() else None)
        except ValueError:
            raise ValueError(
                f"tier limits are NAME=RPM:TPM with whole numbers, got {item.strip()!r}"
            ) from None
    return tiers


@dataclass(frozen=True, slots=True)
class LimitState:
    """The buckets after a request; None limits are not reported."""

    limit_requests: int | None = None
    remaining_requests: int = 0
    reset_requests: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int = 0
    reset_tokens: float = 0.0


UNLIMITED = LimitState()  # no limits configured: no headers


class _Buckets:
    __slots__ = ("rpm", "tpm", "requests", "tokens", "at")

    def __init__(self, rpm: int | None, tpm: int | None, now: float) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.requests = float(rpm or 0)  # a new identity starts with full buckets
        self.tokens = float(tpm or 0)
        self.at = now

    def refill(self, now: float) -> None:
        elapsed = now - self.at
        if elapsed > 0:
            if self.rpm:
                self.requests = min(self.rpm, self.requests + elapsed * self.rpm / 60)
            if self.tpm:
                self.tokens = min(self.tpm, self.tokens + elapsed * self.tpm / 60)
            self.at = now

    def full_in(self) -> float:
        """Seconds until both buckets are full again (as of the last refill)."""
        requests = (self.rpm - self.requests) * 60 / self.rpm if self.rpm else 0.0
        tokens = (self.tpm - self.tokens) * 60 / self.tpm if self.tpm else 0.0
        return max(requests, tokens)

    def state(self) -> LimitState:
        return LimitState(
            self.rpm,
            int(self.requests),
            (self.rpm - self.requests) * 60 / self.rpm if self.rpm else 0.0,
            self.tpm,
            int(self.tokens),
            (self.tpm - self.tokens) * 60 / self.tpm if self.tpm else 0.0,
        )


class RateLimits:
    """Per-identity RPM/TPM buckets. ``per_tier`` maps a key's tier to its (rpm, tpm), replacing
    the defaults (None: that limit is off for the tier)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        per_tier: Mapping[str, tuple[int | None, int | None]] | None = None,
    ) -> None:
        for value in (rpm, tpm, *(v for pair in (per_tier or {}).values() for v in pair)):
            if value is not None and value < 1:
                raise ValueError(f"rate limits must be >= 1 per minute, got {value}")
        self.default = (rpm, tpm)
        self.per_tier = dict(per_tier or {})
        self.enabled = any(v is not None for v in (rpm, tpm)) or any(
            v is not None for pair in self.per_tier.values() for v in pair
        )
        self._buckets: dict[str, _Buckets] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def reset(self) -> None:
        self._buckets.clear()

    def check(
        self,
        identity: str,
        tier: str | None,
        estimated_tokens: int,
        now: float,
        *,
        model: str = "gpt-4o",
        org: str | None = None,
    ) -> LimitState:
        """Take one request and ``estimated_tokens`` from ``identity``'s buckets.

        ``now`` is time.monotonic(). Raises APIError 429 (Kind.RATE_LIMITED) with the bucket that
        was short, the buckets' state and the wait.
        """
        if not self.enabled:
            return UNLIMITED
        if now >= self._next_sweep:
            self._sweep(now)
        buckets = self._buckets.get(identity)
        if buckets is None:
            rpm, tpm = self.per_tier.get(tier, self.default) if tier is not None else self.default
            buckets = self._buckets[identity] = _Buckets(rpm, tpm, now)
        else:
            buckets.refill(now)
        rpm, tpm = buckets.rpm, buckets.tpm
        if rpm and buckets.requests < 1:
            wait = (1 - buckets.requests) * 60 / rpm
            raise self._exceeded(buckets, "requests", model, org, rpm - int(buckets.requests), 1, wait)
        if tpm:
            if estimated_tokens > tpm:
                raise self._exceeded(buckets, "tokens", model, org, 0, estimated_tokens, None)
            if buckets.tokens < estimated_tokens:
                wait = (estimated_tokens - buckets.tokens) * 60 / tpm
                used = tpm - int(buckets.tokens)
                raise self._exceeded(buckets, "tokens", model, org, used, estimated_tokens, wait)
        if rpm:
            buckets.requests -= 1
        if tpm:
            buckets.tokens -= estimated_tokens
        return buckets.state()

    def _sweep(self, now: float) -> None:
        """Forget identities whose buckets are full: a new identity starts full, so it is lossless."""
        self._next_sweep = now + SWEEP_INTERVAL
        idle = [key for key, b in self._buckets.items() if b.at + b.full_in() <= now]
        for key in idle:
            del self._buckets[key]

    @staticmethod
    def _exceeded(
        buckets: _Buckets,
        bucket: str,
        model: str,
        org: str | None,
        used: int,
        requested: int,
        wait: float | None,
    ) -> APIError:
        """A 429 (``wait`` None: a request larger than the limit, which never fits)."""
        cap = buckets.rpm if bucket == "requests" else buckets.tpm
        data = {
            "bucket": bucket,
            "model": model,
            "org": org,
            "cap": cap,
            "used": used,
            "requested": requested,
        }
        if wait is None:
            data["fits"] = False
        return APIError(429, kind=Kind.RATE_LIMITED, data=data, limit=buckets.state(), retry_after=wait)
