"""Reading one chat response as a client sees it: who answered, and whether it is whole.

Identity is read from every place a gateway may leave it: ``x-llmsim-instance``, any renamed copy
(a header whose name ends with it, such as LiteLLM's ``llm_provider-x-llmsim-instance``), and in
the body: ``system_fingerprint`` in an OpenAI body or a stream's chunks, ``llmsim_instance`` in an
Anthropic message (or a stream's ``message_start``) and in an OpenAI Responses ``response`` (or the
``response`` of a stream's ``response.created`` / ``response.completed``). A stream is judged by its content, not its
status: it passes only if every event parses, none is an error, and it reaches its end: a
``finish_reason`` and ``[DONE]`` (OpenAI), a ``message_delta`` with a ``stop_reason`` and
``message_stop`` (Anthropic), ``response.completed`` or ``response.incomplete`` (OpenAI Responses).
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
STREAM_ERROR = "stream_error"  # an error inside a 200 stream: data: {"error": ...}, event: error
CUT = "cut"  # the connection broke before the stream's end (or the whole body): the client sees an error
TRUNCATED = "truncated"  # the HTTP response ended cleanly without its end marker: a silent truncation
NO_FINISH = "no_finish"  # the end marker arrived without a finish_reason (stop_reason)


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
    """The ``error.message`` of an OpenAI or Anthropic error body, else the body's start."""
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


def _json_object(payload: bytes) -> dict[str, Any] | BodyVerdict:
    """A body's JSON object, or the verdict on a body that is not one."""
    try:
        data = json.loads(payload)
    except ValueError:
        return BodyVerdict(MALFORMED, excerpt(payload) or "(empty body)", None)
    return data if isinstance(data, dict) else BodyVerdict(MALFORMED, excerpt(payload), None)


def judge_body(payload: bytes) -> BodyVerdict:
    """A non-streamed 2xx body: a JSON object with ``choices``."""
    data = _json_object(payload)
    if isinstance(data, BodyVerdict):
        return data
    if "error" in data:
        return BodyVerdict(STREAM_ERROR, error_message(payload), fingerprint(data))
    if not isinstance(data.get("choices"), list):
        return BodyVerdict(MALFORMED, excerpt(payload), fingerprint(data))
    return BodyVerdict(None, None, fingerprint(data), usage_of(data))


class SSEJudge:
    """Fed a stream's lines one by one; ``verdict`` says whether it was whole.

    The first failure is kept (its kind and a sample); later events still update identity.
    Subclasses read one provider's events: :meth:`_data` gets each ``data:`` payload, with the
    name of the ``event:`` field before it (``""`` when there was none).
    """

    def __init__(self) -> None:
        self.instance: str | None = None
        self.events = 0
        self.done = False  # the stream's end marker arrived
        self.finished = False  # a finish_reason (stop_reason) arrived
        self.failure: str | None = None
        self.detail: str | None = None
        self.usage: dict[str, Any] | None = None  # as {"prompt_tokens", "completion_tokens", ...}
        self._event = ""

    def _fail(self, kind: str, detail: str) -> None:
        if self.failure is None:
            self.failure, self.detail = kind, detail

    def feed(self, line: bytes) -> bool:
        """One line; True when it was a data event (the first one marks the time to first token)."""
        line = line.rstrip(b"\r\n")
        if line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
            return False
        if not line.strip():
            self._event = ""  # a blank line ends the event
            return False
        if not line.startswith(b"data:"):
            return False  # comments, id:/retry: fields
        self.events += 1
        self._data(line[5:].strip(), self._event)
        return True

    def _data(self, data: bytes, event: str) -> None:
        raise NotImplementedError

    def _json(self, data: bytes) -> dict[str, Any] | None:
        """The event's JSON object; None (and a malformed failure) when it is not one."""
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            self._fail(MALFORMED, excerpt(data))
            return None
        return chunk

    def cut(self, why: str) -> None:
        """The transport ended the stream early (reset, incomplete chunked body, timeout)."""
        self._fail(CUT, f"after {self.events} events: {why}")

    END = "[DONE]"
    FINISH = "finish_reason"

    def verdict(self) -> tuple[str | None, str | None]:
        if self.failure is None and not self.done:
            self._fail(TRUNCATED, f"a clean end after {self.events} events, without {self.END}")
        if self.failure is None and not self.finished:
            self._fail(NO_FINISH, f"{self.END} without a {self.FINISH}")
        return self.failure, self.detail


class StreamJudge(SSEJudge):
    """An OpenAI chat completions stream: chunks, one with a ``finish_reason``, then ``[DONE]``."""

    def _data(self, data: bytes, event: str) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        if self.done:
            self._fail(MALFORMED, f"data after [DONE]: {excerpt(data)}")
            return
        chunk = self._json(data)
        if chunk is None:
            return
        self.instance = self.instance or fingerprint(chunk)
        self.usage = usage_of(chunk) or self.usage
        if "error" in chunk:
            self._fail(STREAM_ERROR, error_message(data))
            return
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finished = True


# --- Anthropic Messages -------------------------------------------------------------------------


def message_instance(obj: Any) -> str | None:
    """``llmsim_instance`` of an Anthropic message (llmsim puts its ID there)."""
    value = obj.get("llmsim_instance") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage(usage: Any, output: Any = None) -> dict[str, Any] | None:
    """Anthropic's usage as OpenAI's keys: every input token (uncached, cache writes and reads)
    is a prompt token, the output tokens are completion tokens. ``output``: a later usage object
    (a stream's ``message_delta``) whose counts win over ``usage``'s."""
    merged = {**(usage if isinstance(usage, dict) else {}), **(output if isinstance(output, dict) else {})}
    if "input_tokens" not in merged and "output_tokens" not in merged:
        return None
    inputs = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {
        "prompt_tokens": sum(_count(merged.get(k)) for k in inputs),
        "completion_tokens": _count(merged.get("output_tokens")),
    }


def judge_message_body(payload: bytes) -> BodyVerdict:
    """A non-streamed 2xx Anthropic body: ``{"type": "message", "content": [...]}``."""
    data = _json_object(payload)
    if isinstance(data, BodyVerdict):
        return data
    instance = message_instance(data)
    if data.get("type") == "error" or "error" in data:
        return BodyVerdict(STREAM_ERROR, error_message(payload), instance)
    if data.get("type") != "message" or not isinstance(data.get("content"), list):
        return BodyVerdict(MALFORMED, excerpt(payload), instance)
    return BodyVerdict(None, None, instance, anthropic_usage(data.get("usage")))


class MessageStreamJudge(SSEJudge):
    """An Anthropic Messages stream: named events from ``message_start`` to ``message_stop``, a
    ``message_delta`` with the ``stop_reason`` before it; ``event: error`` is a failure."""

    END = "message_stop"
    FINISH = "message_delta with a stop_reason"

    def __init__(self) -> None:
        super().__init__()
        self._start_usage: dict[str, Any] | None = None

    def _data(self, data: bytes, event: str) -> None:
        if self.done:
            self._fail(MALFORMED, f"data after message_stop: {excerpt(data)}")
            return
        if event == "error":
            self._fail(STREAM_ERROR, error_message(data))
            return
        chunk = self._json(data)
        if chunk is None:
            return
        kind = chunk.get("type")
        if kind == "error" or "error" in chunk:
            self._fail(STREAM_ERROR, error_message(data))
        elif kind == "message_start":
            message = chunk.get("message")
            self.instance = self.instance or message_instance(message)
            self._start_usage = message.get("usage") if isinstance(message, dict) else None
            self.usage = anthropic_usage(self._start_usage)
        elif kind == "message_delta":
            delta = chunk.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.finished = True
            self.usage = anthropic_usage(self._start_usage, chunk.get("usage")) or self.usage
        elif kind == "message_stop":
            self.done = True


# --- OpenAI Responses -----------------------------------------------------------------------------


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A Responses usage (``input_tokens``, ``output_tokens``) as chat's keys."""
    if not isinstance(usage, dict) or ("input_tokens" not in usage and "output_tokens" not in usage):
        return None
    return {
        "prompt_tokens": _count(usage.get("input_tokens")),
        "completion_tokens": _count(usage.get("output_tokens")),
    }


def judge_response_body(payload: bytes) -> BodyVerdict:
    """A non-streamed 2xx Responses body: ``{"object": "response", "output": [...]}``, not failed."""
    data = _json_object(payload)
    if isinstance(data, BodyVerdict):
        return data
    instance = message_instance(data)
    if data.get("status") == "failed" or (isinstance(data.get("error"), dict) and data["error"]):
        return BodyVerdict(STREAM_ERROR, error_message(payload), instance)
    if data.get("object") != "response" or not isinstance(data.get("output"), list):
        return BodyVerdict(MALFORMED, excerpt(payload), instance)
    return BodyVerdict(None, None, instance, responses_usage(data.get("usage")))


class ResponseStreamJudge(SSEJudge):
    """An OpenAI Responses stream: typed events from ``response.created`` to ``response.completed``
    (or ``response.incomplete``: a max_output_tokens cut is a finished answer); ``response.failed``
    and ``error`` are failures. Nothing follows the last event (no ``[DONE]``)."""

    END = "response.completed"
    FINISH = "response.completed or response.incomplete"
    _ENDS = ("response.completed", "response.incomplete")

    def _data(self, data: bytes, event: str) -> None:
        if self.done:
            self._fail(MALFORMED, f"data after {self.END}: {excerpt(data)}")
            return
        chunk = self._json(data)
        if chunk is None:
            return
        kind = chunk.get("type") or event
        response = chunk.get("response")
        if isinstance(response, dict):
            self.instance = self.instance or message_instance(response)
        if kind == "error" or "error" in chunk:
            self._fail(STREAM_ERROR, error_message(data))
        elif kind == "response.failed":
            error = response.get("error") if isinstance(response, dict) else None
            detail = error.get("message") if isinstance(error, dict) else None
            self._fail(STREAM_ERROR, excerpt(str(detail or "response.failed")))
        elif kind in self._ENDS:
            self.done = self.finished = True
            if isinstance(response, dict):
                self.usage = responses_usage(response.get("usage")) or self.usage
