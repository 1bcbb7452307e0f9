"""The provider APIs the probe and check speak (``--api``): where a request goes, what it looks
like, the headers it needs, and how its answer is read (:mod:`cluster.responses`).

Every body carries the trace token in the prompt (``llmsim-trace:<token>``) and asks for a short
answer; a different prompt per request, so no cache can answer for the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmsim.identity import TRACE_MARK
from llmsim_cluster import responses

ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 16


def prompt(index: int, trace: str) -> str:
    return f"llmsim probe request {index} {TRACE_MARK}{trace}"


def chat_body(
    model: str, index: int, trace: str, stream: bool, include_usage: bool = False
) -> dict[str, Any]:
    """OpenAI chat completions; ``include_usage`` asks a stream for its usage chunk."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt(index, trace)}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    if stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def messages_body(
    model: str, index: int, trace: str, stream: bool, include_usage: bool = False
) -> dict[str, Any]:
    """Anthropic Messages; a stream always carries its usage (``include_usage`` is moot)."""
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": prompt(index, trace)}],
        "stream": stream,
    }


def responses_body(
    model: str, index: int, trace: str, stream: bool, include_usage: bool = False
) -> dict[str, Any]:
    """OpenAI Responses; a stream always ends with the whole response and its usage. Not stored:
    a probe's answers need no later turn."""
    return {
        "model": model,
        "input": prompt(index, trace),
        "max_output_tokens": MAX_TOKENS,
        "stream": stream,
        "store": False,
    }


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def bearer_and_x_api_key(api_key: str) -> dict[str, str]:
    """Anthropic's own ``x-api-key``, and ``Authorization: Bearer`` too: gateways in front of
    Anthropic (LiteLLM and the like) take the Bearer token; llmsim accepts either."""
    return {**bearer(api_key), "x-api-key": api_key}


@dataclass(frozen=True)
class Api:
    name: str
    path: str  # appended to a URL that has no path
    default_model: str
    body: Callable[[str, int, str, bool, bool], dict[str, Any]]  # (model, index, trace, stream, usage)
    headers: dict[str, str]  # sent with every request
    key_headers: Callable[[str], dict[str, str]]  # the headers that carry --api-key
    judge_body: Callable[[bytes], responses.BodyVerdict]  # a whole 2xx body
    stream_judge: Callable[[], responses.SSEJudge]  # a fresh judge per stream


OPENAI = Api(
    name="openai",
    path="/v1/chat/completions",
    default_model="gpt-4o-mini",
    body=chat_body,
    headers={},
    key_headers=bearer,
    judge_body=responses.judge_body,
    stream_judge=responses.StreamJudge,
)

ANTHROPIC = Api(
    name="anthropic",
    path="/v1/messages",
    default_model="claude-sonnet-4-5",
    body=messages_body,
    headers={"anthropic-version": ANTHROPIC_VERSION},
    key_headers=bearer_and_x_api_key,
    judge_body=responses.judge_message_body,
    stream_judge=responses.MessageStreamJudge,
)

RESPONSES = Api(
    name="responses",
    path="/v1/responses",
    default_model="gpt-4o-mini",
    body=responses_body,
    headers={},
    key_headers=bearer,
    judge_body=responses.judge_response_body,
    stream_judge=responses.ResponseStreamJudge,
)

APIS: dict[str, Api] = {api.name: api for api in (OPENAI, ANTHROPIC, RESPONSES)}
