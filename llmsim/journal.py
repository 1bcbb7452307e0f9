"""The request journal: a bounded ring of what this instance received and what it did with it.

A gateway test needs the instance's side of every attempt (a retry, a hedge, a request the
gateway answered itself is *absent* here), so ``llmsim probe`` and ``llmsim check`` collect the
journals of all instances and match attempts by trace token. An entry is appended at arrival, so
requests in flight are visible, and completed when the response ends.

Cheap on the hot path (the budget is 3 % of the non-streaming benchmark): a small object on
arrival, one tuple of atoms when the request ends (the headers joined into one bytes object in
C), and no rounding, decoding or masking until the journal is read.
"""

from __future__ import annotations

import re
import time
from collections import deque
from itertools import chain
from typing import Any

from llmsim.auth import mask
from llmsim.identity import TRACE_MARK

# Values never shown whole: the client's credentials, whatever the header carries them.
_SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"x-api-key", b"api-key", b"cookie", b"x-llmsim-admin-token"}
)
_MARK = TRACE_MARK.encode()
TOKEN = re.compile(rb"[A-Za-z0-9._-]{1,64}")
MAX_HEADER_BYTES = 8 * 1024  # kept per entry: 10k entries of hostile headers stay bounded
_NUL = b"\0"  # never in a header name or value (the HTTP parser refuses it): the separator
DEFAULT_LIMIT = 1000  # entries GET /llmsim/requests returns unless asked
MAX_LIMIT = 10_000


# A finished request, as kept: a tuple of atoms (numbers, strings, bytes, None), which the garbage
# collector stops tracking, so ten thousand of them cost a full collection nothing.
_FIELDS = (
    "seq",
    "at",
    "request_id",
    "trace",
    "method",
    "path",
    "headers",
    "status",
    "ended",
    "duration",
    "model",
    "stream",
    "fault",
    "ttft",
    "itl",
    "events",
    "prompt_tokens",
    "completion_tokens",
)
_NOT_A_GENERATION = (None,) * 8  # model .. completion_tokens, of a request that is not a generation


class Entry:
    """A request in flight: what is known on arrival (the trace may come later, from the body)."""

    # Never the scope itself: the scope holds the entry, and the cycle would leave every request's
    # scope to the garbage collector (measured: a fifth of the throughput).
    __slots__ = ("seq", "at", "request_id", "trace", "method", "path", "headers")

    def __init__(self, seq: int, request_id: bytes, trace: bytes | None, scope: dict[str, Any]) -> None:
        self.seq = seq
        self.at = time.time()
        self.request_id = request_id
        self.trace = trace
        self.method = scope["method"]
        self.path = scope["path"]
        self.headers = scope["headers"]

    def record(self, status: int | None, ended: str, duration: float | None, generation: tuple = ()) -> tuple:
        blob = _NUL.join(chain.from_iterable(self.headers))
        if len(blob) > MAX_HEADER_BYTES:
            blob = blob[:MAX_HEADER_BYTES]
        return (
            self.seq, self.at, self.request_id, self.trace, self.method, self.path, blob, status, ended, duration,
            *generation,
        )  # fmt: skip


class Journal:
    def __init__(self, size: int) -> None:
        self.size = size
        self.total = 0
        self.entries: deque[tuple] = deque(maxlen=size)  # finished, in the order they finished
        self.in_flight: dict[int, Entry] = {}

    def open(self, request_id: bytes, trace: bytes | None, scope: dict[str, Any]) -> Entry:
        self.total += 1
        entry = self.in_flight[self.total] = Entry(self.total, request_id, trace, scope)
        return entry

    def close(self, entry: Entry, status: int, ended: str, duration: float, turn: Any = None) -> None:
        """``turn``: the engine's Turn, when the request was a generation (its model is set)."""
        del self.in_flight[entry.seq]
        if turn is None or not turn.model:
            self.entries.append(entry.record(status, ended, duration))
            return
        plan, itls = turn.plan, turn.plan.itls
        timed = plan.prefill or turn.queued_s or itls
        generation = (
            turn.model,
            turn.stream,
            turn.fault.type.value if turn.fault is not None else None,
            turn.queued_s + plan.prefill if timed else None,
            (sum(itls) / len(itls) if itls else 0.0) if timed else None,
            turn.events,
            turn.prompt_tokens,
            turn.completion_tokens,
        )
        self.entries.append(entry.record(status, ended, duration, generation))

    def clear(self) -> None:
        self.entries.clear()

    def query(
        self, trace: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
    ) -> dict[str, Any]:
        prefix = trace.encode() if trace else None
        records = [*self.entries, *(e.record(None, "in_flight", None) for e in self.in_flight.values())]
        picked = [
            r
            for r in records
            if (prefix is None or (r[3] is not None and r[3].startswith(prefix)))
            and (since is None or r[1] >= since)
        ]
        picked.sort()  # by seq: arrival order
        return {
            "size": self.size,
            "total": self.total,
            "entries": [_render(r) for r in picked[-limit:]] if limit else [],
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _render(record: tuple) -> dict[str, Any]:
    item = dict(zip(_FIELDS, record + _NOT_A_GENERATION[: len(_FIELDS) - len(record)], strict=True))
    parts = item["headers"].split(_NUL) if item["headers"] else []
    headers: dict[str, str] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=False):
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if name in _SECRET_HEADERS:
            scheme, _, secret = text.partition(" ")
            text = f"{scheme} {mask(secret)}" if secret else mask(text)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    prompt, completion = item.pop("prompt_tokens"), item.pop("completion_tokens")
    ttft, itl = item.pop("ttft"), item.pop("itl")
    return {
        "seq": item["seq"],
        "at": item["at"],
        "request_id": item["request_id"].decode("latin-1"),
        "trace": item["trace"].decode() if item["trace"] else None,
        "method": item["method"],
        "path": item["path"],
        "model": item["model"],
        "stream": item["stream"],
        "headers": headers,
        "status": item["status"],
        "fault": item["fault"],
        "plan": None if ttft is None else {"ttft_ms": _ms(ttft), "itl_ms": _ms(itl)},
        "events": item["events"],
        "usage": None if prompt is None else {"prompt_tokens": prompt, "completion_tokens": completion},
        "ended": item["ended"],
        "duration_ms": _ms(item["duration"]),
    }


def trace_in_body(raw: bytes) -> bytes | None:
    """The token after the first ``llmsim-trace:`` in a request body, if any."""
    at = raw.find(_MARK)
    if at < 0:
        return None
    match = TOKEN.match(raw, at + len(_MARK))
    return match.group() if match else None


def valid_trace(value: bytes) -> bytes | None:
    match = TOKEN.fullmatch(value.strip())
    return match.group() if match else None
