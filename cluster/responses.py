"""Reading one chat response as a client sees it: who answered, and whether it is whole.

Identity is read from every place a gateway may leave it: ``x-llmsim-instance``, any renamed copy
(a header whose name ends with it, such as LiteLLM's ``llm_provider-x-llmsim-instance``), and
``system_fingerprint`` in the body or a stream's chunks. A stream is judged by its content, not
its status: it passes only if every event parses, none is an error object, and it reaches a
``finish_reason`` and ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmsim.identity import INSTANCE_HEADER

SAMPLE_CHARS = 160

# Failure kinds a 2xx response can still have.
MALFORMED = "malformed"  # an event (or a whole body) that is not the JSON it should be
STREAM_ERROR = "stream_error"  # an error object inside a 200 stream: data: {"error": ...}
CUT = "cut"  # the connection broke before [DONE] (or before the whole body): the client sees an error
TRUNCATED = "truncated"  # the HTTP response ended cleanly without [DONE]: a silent truncation
NO_FINISH = "no_finish"  # [DONE] arrived without any chunk carrying a finish_reason


def excerpt(text: str | bytes, limit: int = SAMPLE_CHARS) -> str:
    """One line, at most ``limit`` characters: for samples in the report."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def instance_from_headers(headers: Iterable[tuple[str, str]]) -> str | None:
    """``x-llmsim-instance`` itself first, else any header whose name ends with it."""
    renamed = None
    for name, value in headers:
        low = name.lower()
        if not value.strip():
            continue
        if low == INSTANCE_HEADER:
            return value.strip()
        if renamed is None and low.endswith(INSTANCE_HEADER):
            renamed = value.strip()
    return renamed


def fingerprint(obj: Any) -> str | None:
    value = obj.get("system_fingerprint") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


def error_message(payload: bytes | str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        data = json.loads(payload)
    except ValueError:
        return excerpt(payload) or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return excerpt(str(error["message"]))
    if isinstance(error, str) and error:
        return excerpt(error)
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return excerpt(data["detail"])
    return excerpt(payload if isinstance(payload, str) else payload.decode("utf-8", "replace"))


@dataclass
class BodyVerdict:
    failure: str | None  # None: a whole chat.completion
    detail: str | None
    instance: str | None
    usage: dict[str, Any] | None = None


def usage_of(obj: Any) -> dict[str, Any] | None:
    value = obj.get("usage") if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None


def judge_body(payload: bytes) -> BodyVerdict:
    """A non-streamed 2xx body: a JSON object with ``choices``."""
    try:
        data = json.loads(payload)
    except ValueError:
        return BodyVerdict(MALFORMED, excerpt(payload) or "(empty body)", None)
    if not isinstance(data, dict):
        return BodyVerdict(MALFORMED, excerpt(payload), None)
    if "error" in data:
        return BodyVerdict(STREAM_ERROR, error_message(payload), fingerprint(data))
    if not isinstance(data.get("choices"), list):
        return BodyVerdict(MALFORMED, excerpt(payload), fingerprint(data))
    return BodyVerdict(None, None, fingerprint(data), usage_of(data))


class StreamJudge:
    """Fed the stream's lines one by one; ``verdict`` says whether it was whole.

    The first failure is kept (its kind and a sample); later events still update identity.
    """

    def __init__(self) -> None:
        self.instance: str | None = None
        self.events = 0
        self.done = False
        self.finished = False
        self.failure: str | None = None
        self.detail: str | None = None
        self.usage: dict[str, Any] | None = None  # the usage chunk's (stream_options.include_usage)

    def _fail(self, kind: str, detail: str) -> None:
        if self.failure is None:
            self.failure, self.detail = kind, detail

    def feed(self, line: bytes) -> bool:
        """One line; True when it was a data event (the first one marks the time to first token)."""
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data:"):
            return False  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        self.events += 1
        if data == b"[DONE]":
            self.done = True
            return True
        if self.done:
            self._fail(MALFORMED, f"data after [DONE]: {excerpt(data)}")
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            self._fail(MALFORMED, excerpt(data))
            return True
        if not isinstance(chunk, dict):
            self._fail(MALFORMED, excerpt(data))
            return True
        self.instance = self.instance or fingerprint(chunk)
        self.usage = usage_of(chunk) or self.usage
        if "error" in chunk:
            self._fail(STREAM_ERROR, error_message(data))
            return True
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished = True
        return True

    def cut(self, why: str) -> None:
        """The transport ended the stream early (reset, incomplete chunked body, timeout)."""
        self._fail(CUT, f"after {self.events} events: {why}")

    def verdict(self) -> tuple[str | None, str | None]:
        if self.failure is None and not self.done:
            self._fail(TRUNCATED, f"a clean end after {self.events} events, without [DONE]")
        if self.failure is None and not self.finished:
            self._fail(NO_FINISH, "[DONE] without a finish_reason")
        return self.failure, self.detail
