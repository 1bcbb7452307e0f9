"""Injected failures, for testing how a gateway retries, fails over and reports.

Three kinds of fault, by when they act:

- **immediate** (``rate_limit``, ``server_error``, ``overloaded``, ``bad_gateway``,
  ``context_length``, ``auth``): an error response in the provider's envelope before anything
  else is sent; :meth:`FaultPolicy.error_for` builds it. ``status=NNN`` overrides the status.
- **mid-stream** (``disconnect``, ``malformed``): the response starts as a normal 200 stream; after
  ``after`` chunks (default 3) the connection is dropped without ``[DONE]``, or one corrupt SSE
  event (the surface's ``malformed_event``) is written and the stream carries on.
- **timing** (``timeout``, ``slow``): ``timeout`` accepts the request and answers nothing until
  the client gives up or ``hang`` seconds pass; ``slow`` multiplies the time to first token by
  ``factor`` (so on an instant server it changes nothing).

An immediate fault answering 429 or 503 tells the client when to retry: ``retry-after`` and
``retry-after-ms`` from the ``x-llmsim-retry-after`` header, else the fault's ``retry_after=S``,
else the ``retry_after`` setting (0: no header, as many 503s come).

Selection, in order: the ``x-llmsim-fault`` header (``<type>[;after=K][;status=NNN]
[;retry_after=S][;hang=S][;factor=F]``); then ``fail_first`` (the next N requests without the header fail, for retry
tests); then a seeded random draw at ``rate`` among ``types``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from llmsim.errors import APIError, Kind
from llmsim.limits import LimitState

HEADER = "x-llmsim-fault"
DEFAULT_AFTER = 3  # chunks sent before a mid-stream fault
DEFAULT_HANG = 600.0  # seconds a timeout holds a request when no hang is given
DEFAULT_SLOW_FACTOR = 10.0
DEFAULT_RETRY_AFTER = 1.0  # seconds, on 429/503 faults
DEFAULT_CONTEXT_WINDOW = 128_000  # tokens named by the context_length fault's message


class FaultType(str, Enum):
    rate_limit = "rate_limit"
    server_error = "server_error"
    overloaded = "overloaded"
    bad_gateway = "bad_gateway"
    timeout = "timeout"
    context_length = "context_length"
    auth = "auth"
    disconnect = "disconnect"
    malformed = "malformed"
    slow = "slow"


MID_STREAM = frozenset({FaultType.disconnect, FaultType.malformed})
# Each immediate fault's status and neutral error (a surface may answer another status: 529).
_IMMEDIATE_ERRORS: dict[FaultType, tuple[int, Kind]] = {
    FaultType.rate_limit: (429, Kind.RATE_LIMITED),
    FaultType.server_error: (500, Kind.SERVER_ERROR),
    FaultType.overloaded: (503, Kind.OVERLOADED),
    FaultType.bad_gateway: (502, Kind.BAD_GATEWAY),
    FaultType.context_length: (400, Kind.CONTEXT_LENGTH),
    FaultType.auth: (401, Kind.AUTH),
}
IMMEDIATE = frozenset(_IMMEDIATE_ERRORS)
TIMING = frozenset({FaultType.timeout, FaultType.slow})

DEFAULT_TYPES = (FaultType.server_error,)  # what --failure-rate/--fail-first inject without --failure-types

# Which header parameters each type takes; anything else is a 400, not silently ignored.
_PARAMS: dict[FaultType, frozenset[str]] = {
    **{t: frozenset({"status", "retry_after"}) for t in IMMEDIATE},
    **{t: frozenset({"after"}) for t in MID_STREAM},
    FaultType.timeout: frozenset({"hang"}),
    FaultType.slow: frozenset({"factor"}),
}
_VALID = ", ".join(t.value for t in FaultType)
# The largest hang (an hour) and slow factor a header may ask for; NaN fails every bound.
_LARGEST = {"hang": 3600.0, "factor": 1000.0, "retry_after": 3600.0}
_FLOATS = frozenset(_LARGEST)


@dataclass(frozen=True, slots=True)
class Fault:
    """One request's fault. Frozen, so the policy hands out shared instances."""

    type: FaultType
    after: int | None = None  # mid-stream: chunks sent before the fault
    status: int | None = None  # immediate: overrides the status
    hang: float | None = None  # timeout: seconds before the connection is given up
    factor: float | None = None  # slow: time-to-first-token multiplier
    retry_after: float | None = None  # immediate 429/503: seconds in retry-after (0: none)

    @property
    def immediate(self) -> bool:
        return self.type in IMMEDIATE

    @property
    def mid_stream(self) -> bool:
        return self.type in MID_STREAM


def _bad(reason: str) -> APIError:
    return APIError(400, f"Invalid header {HEADER}: {reason}", HEADER, "invalid_value")


def parse_header(
    value: str | bytes,
    *,
    after: int = DEFAULT_AFTER,
    hang: float = DEFAULT_HANG,
    factor: float = DEFAULT_SLOW_FACTOR,
) -> Fault:
    """``<type>[;after=K][;status=NNN][;hang=S][;factor=F]``; parameters left out take the defaults."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    name, *params = (part.strip() for part in text.split(";"))
    try:
        kind = FaultType(name.lower())
    except ValueError:
        raise _bad(f"unknown fault type {name[:40]!r}; valid types: {_VALID}.") from None
    fields: dict[str, Any] = {}
    for param in params:
        if not param:
            continue
        key, sep, raw = (s.strip() for s in param.partition("="))
        key = key.lower()
        if not sep or key not in _PARAMS[kind]:
            allowed = ", ".join(sorted(_PARAMS[kind])) or "none"
            raise _bad(f"{kind.value} does not take {param[:40]!r} (parameters: {allowed}).")
        try:
            number = float(raw) if key in _FLOATS else int(raw)
        except ValueError:
            raise _bad(f"{key} must be a number, got {raw[:40]!r}.") from None
        if key == "status" and not 400 <= number <= 599:
            raise _bad(f"status must be between 400 and 599, got {raw[:40]}.")
        largest = _LARGEST.get(key)
        if not 0 <= number <= (largest or number) or (key == "factor" and number == 0):
            most = f" and at most {largest:g}" if largest else ""
            raise _bad(f"{key} must be positive{most}, got {raw[:40]!r}.")
        fields[key] = number
    return _with_defaults(Fault(kind, **fields), after, hang, factor)


def _with_defaults(fault: Fault, after: int, hang: float, factor: float) -> Fault:
    if fault.type in MID_STREAM and fault.after is None:
        return replace(fault, after=after)
    if fault.type is FaultType.timeout and fault.hang is None:
        return replace(fault, hang=hang)
    if fault.type is FaultType.slow and fault.factor is None:
        return replace(fault, factor=factor)
    return fault


class FaultPolicy:
    """Decides, per request, whether and how it fails (the pipeline counts what was injected).

    ``pick`` is O(1) and allocation-free on the common path (no header, no fault): Fault objects
    are built once, and header values are parsed once each (a small LRU cache).
    """

    def __init__(
        self,
        rate: float = 0.0,
        types: Sequence[FaultType | str] = (),
        fail_first: int = 0,
        seed: int | None = None,
        *,
        after: int = DEFAULT_AFTER,
        hang: float = DEFAULT_HANG,
        slow_factor: float = DEFAULT_SLOW_FACTOR,
        retry_after: float = DEFAULT_RETRY_AFTER,
        context_window: int = DEFAULT_CONTEXT_WINDOW,
        organization: str = "org-llmsim",
    ) -> None:
        self.after, self.hang, self.slow_factor = after, hang, slow_factor
        self.retry_after = retry_after
        self.context_window = context_window
        self.organization = organization
        self.rng = random.Random(seed)
        self._parse = functools.lru_cache(maxsize=128)(parse_header)  # keyed by the defaults too
        self.rate = 0.0
        self.types: tuple[FaultType, ...] = DEFAULT_TYPES
        self._faults: tuple[Fault, ...] = ()
        self._first_left = 0
        self.configure(rate=rate, types=types, fail_first=fail_first)

    def configure(
        self,
        *,
        rate: float | None = None,
        types: Sequence[FaultType | str] | None = None,
        fail_first: int | None = None,
    ) -> None:
        """Change the policy at runtime (PATCH /llmsim/config); None leaves a field as it is.

        ``fail_first`` restarts the count: the next N requests fail. Raises ValueError on bad input.
        """
        if rate is not None:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"failure rate must be between 0 and 1, got {rate}")
            self.rate = float(rate)
        if types is not None:
            try:
                parsed = tuple(FaultType(t) for t in types) or DEFAULT_TYPES
            except ValueError as exc:
                raise ValueError(f"{exc}; valid types: {_VALID}") from None
            self.types = parsed
        if fail_first is not None:
            if fail_first < 0:
                raise ValueError(f"fail_first must be >= 0, got {fail_first}")
            self._first_left = fail_first
        self._faults = tuple(
            _with_defaults(Fault(t), self.after, self.hang, self.slow_factor) for t in self.types
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "failure_rate": self.rate,
            "failure_types": [t.value for t in self.types],
            "fail_first_remaining": self._first_left,
        }

    def pick(self, header_value: str | bytes | None, stream: bool = True) -> Fault | None:
        """This request's fault, or None. Raises APIError 400 on a malformed header.

        A header request does not use up fail-first. A mid-stream fault drawn for a whole-body
        response has nothing to act on: it is not injected, and does not use up fail-first.
        """
        if header_value:
            fault = self._parse(header_value, after=self.after, hang=self.hang, factor=self.slow_factor)
        elif self._first_left:
            fault = self._choose()
            if fault.mid_stream and not stream:
                return None
            self._first_left -= 1
        elif self.rate and self.rng.random() < self.rate:
            fault = self._choose()
        else:
            return None
        return None if fault.mid_stream and not stream else fault

    def _choose(self) -> Fault:
        faults = self._faults
        return faults[0] if len(faults) == 1 else faults[self.rng.randrange(len(faults))]

    def error_for(
        self, fault: Fault, model: str = "gpt-4o", prompt_tokens: int = 0, retry_after: float | None = None
    ) -> APIError:
        """The error of an immediate fault, as a neutral kind the route's wire words.

        ``retry_after``: the request's own override (``x-llmsim-retry-after``), which wins; a 429 or
        503 tells the client when to retry, other statuses only when asked to.
        """
        kind = fault.type
        if retry_after is None:
            retry_after = fault.retry_after
        wait = self.retry_after if retry_after is None else retry_after
        if kind not in _IMMEDIATE_ERRORS:
            raise ValueError(f"{kind.value} is not an immediate fault")
        status, error_kind = _IMMEDIATE_ERRORS[kind]
        error = APIError(status, kind=error_kind)
        if kind is FaultType.rate_limit:  # a made-up exhausted bucket of 3 requests a minute
            error.data = {"bucket": "requests", "model": model, "org": self.organization}
            error.data |= {"cap": 3, "used": 3, "requested": 1}
            error.limit = LimitState(3, 0, wait)
        elif kind is FaultType.context_length:
            error.data = {"window": self.context_window, "tokens": prompt_tokens}
        elif kind is FaultType.auth:
            error.data = {"key": "sk-llmsi*****************ault"}
        if fault.status is not None:
            error.status = fault.status
        if error.status in (429, 503) or retry_after is not None:
            error.retry_after = wait
        return error
