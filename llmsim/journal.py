"""The request journal: a bounded ring of what this instance received and what it did with it.

A gateway test needs the instance's side of every attempt (a retry, a hedge, a request the
gateway answered itself is *absent* here), so ``llmsim probe`` and ``llmsim check`` collect the
journals of all instances and match attempts by trace token. An entry is appended at arrival, so
requests in flight are visible, and completed when the response ends. Cheap on the hot path: one
slotted object a request, filled from what the pipeline already knows; rendered only when read.
"""

from __future__ import annotations

import re
import time
from collections import deque
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
DEFAULT_LIMIT = 1000  # entries GET /llmsim/requests returns unless asked
MAX_LIMIT = 10_000


class Entry:
    __slots__ = (
        "seq",
        "at",
        "request_id",
        "trace",
        "method",
        "path",
        "headers",
        "model",
        "stream",
        "status",
        "fault",
        "plan",
        "events",
        "usage",
        "ended",
        "duration_ms",
    )

    def __init__(
        self, seq: int, request_id: bytes, trace: bytes | None, method: str, path: str, headers: list
    ) -> None:
        self.seq = seq
        self.at = time.time()
        self.request_id = request_id
        self.trace = trace
        self.method = method
        self.path = path
        self.headers = headers
        self.model: str | None = None
        self.stream: bool | None = None
        self.status: int | None = None
        self.fault: str | None = None
        self.plan: dict[str, float] | None = None
        self.events: int | None = None
        self.usage: tuple[int, int] | None = None
        self.ended = "in_flight"
        self.duration_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            if name in _SECRET_HEADERS:
                scheme, _, secret = text.partition(" ")
                text = f"{scheme} {mask(secret)}" if secret else mask(text)
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return {
            "seq": self.seq,
            "at": self.at,
            "request_id": self.request_id.decode("latin-1"),
            "trace": self.trace.decode() if self.trace else None,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "headers": headers,
            "status": self.status,
            "fault": self.fault,
            "plan": self.plan,
            "events": self.events,
            "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1]}
            if self.usage
            else None,
            "ended": self.ended,
            "duration_ms": self.duration_ms,
        }


class Journal:
    def __init__(self, size: int) -> None:
        self.size = size
        self.total = 0
        self.entries: deque[Entry] = deque(maxlen=size)

    def open(self, request_id: bytes, trace: bytes | None, scope: dict[str, Any], header_bytes: int) -> Entry:
        self.total += 1
        headers = scope["headers"]
        if header_bytes > MAX_HEADER_BYTES:
            headers = _clip(headers)
        entry = Entry(self.total, request_id, trace, scope["method"], scope["path"], headers)
        self.entries.append(entry)
        return entry

    def clear(self) -> None:
        self.entries.clear()

    def query(
        self, trace: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
    ) -> dict[str, Any]:
        prefix = trace.encode() if trace else None
        picked = [
            e
            for e in self.entries
            if (prefix is None or (e.trace is not None and e.trace.startswith(prefix)))
            and (since is None or e.at >= since)
        ]
        return {
            "size": self.size,
            "total": self.total,
            "entries": [e.as_dict() for e in picked[-limit:]] if limit else [],
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


def _clip(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept, size = [], 0
    for name, value in headers:
        size += len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            break
        kept.append((name, value))
    return kept
