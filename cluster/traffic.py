"""Chat traffic through a gateway, each request traced, each answer read as a client reads it.

The requests speak one provider's API (:mod:`cluster.apis`: OpenAI chat completions or
Anthropic Messages), which also says how their answers are read.

Every request carries a trace token, ``<run id>-<index>``, twice: in the ``x-llmsim-trace``
header and inside the prompt (``llmsim-trace:<token>``), because gateways drop unknown headers
but keep the user's words. The instances journal it, so the journals tell afterwards which
instances each request reached (:mod:`cluster.reconcile`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmsim.identity import TRACE_HEADER
from llmsim_cluster import responses
from llmsim_cluster.apis import OPENAI, Api

CONN = "conn"  # no HTTP response at all: refused, reset before the headers, timeout


def new_run_id(prefix: str = "pr") -> str:
    """Random per run, so two runs (or two probes at once) never share a trace prefix."""
    return f"{prefix}-{secrets.token_hex(4)}"


def trace_token(run_id: str, index: int) -> str:
    return f"{run_id}-{index:06d}"


@dataclass
class Outcome:
    trace: str
    status: int | None  # None: no HTTP response at all
    instance: str | None  # as read from the response; None when it carried no identity
    latency: float
    started: float  # unix seconds, comparable with the journals' "at"
    ttft: float | None = None
    session: str | None = None
    failure: str | None = None  # None: a whole, successful answer; else http_NNN, conn, cut, malformed…
    detail: str | None = None  # error message or sample of what was wrong
    usage: dict[str, Any] | None = None  # the answer's usage, as the client got it

    @property
    def ok(self) -> bool:
        return self.failure is None


def _failure_of_status(status: int) -> str:
    return f"http_{status}"


async def send_one(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    stream: bool,
    trace: str,
    api: Api = OPENAI,
) -> Outcome:
    """One request; never raises for what the network or the gateway does."""
    wall = time.time()
    started = time.perf_counter()
    status: int | None = None
    instance: str | None = None
    judge = api.stream_judge()
    ttft = None
    usage = None
    try:
        async with http.post(url, json=body, headers=headers) as response:
            status = response.status
            instance = responses.instance_from_headers(response.headers.items())
            if not 200 <= status < 300:
                payload = await response.read()
                message = responses.error_message(payload)
                return Outcome(
                    trace, status, instance, time.perf_counter() - started, wall,
                    failure=_failure_of_status(status), detail=message,
                )  # fmt: skip
            if stream:
                try:
                    async for line in response.content:
                        if judge.feed(line) and ttft is None:
                            ttft = time.perf_counter() - started
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    judge.cut(str(exc) or type(exc).__name__)
                failure, detail = judge.verdict()
                instance = instance or judge.instance
                usage = judge.usage
            else:
                try:
                    verdict = api.judge_body(await response.read())
                    failure, detail = verdict.failure, verdict.detail
                    instance = instance or verdict.instance
                    usage = verdict.usage
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    failure, detail = responses.CUT, str(exc) or type(exc).__name__
            latency = time.perf_counter() - started
            return Outcome(
                trace, status, instance, latency, wall, ttft, failure=failure, detail=detail, usage=usage
            )
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        return Outcome(
            trace, status, instance, time.perf_counter() - started, wall, failure=CONN, detail=reason
        )


async def run_traffic(
    url: str,
    requests: int,
    concurrency: int,
    *,
    run_id: str | None = None,
    api: Api = OPENAI,
    model: str | None = None,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    sticky_header: str | None = None,
    sessions: int = 10,
    timeout: float = 30.0,
    interval: float = 0.0,
    include_usage: bool = False,
    on_done: Callable[[], None] | None = None,
) -> list[Outcome]:
    """Send ``requests`` chat requests in ``api``'s format (``model``: default the API's) with at
    most ``concurrency`` in flight, in trace order.

    ``interval``: request k starts no sooner than k × interval seconds after the first (paced
    traffic, so a run spans time: a gateway's cooldowns and Retry-After show in it).
    """
    run_id = run_id or new_run_id()
    model = model or api.default_model
    next_index = iter(range(requests))
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    began = time.perf_counter()

    async def worker(http: aiohttp.ClientSession) -> None:
        for index in next_index:
            if interval:
                await asyncio.sleep(max(0.0, began + index * interval - time.perf_counter()))
            trace = trace_token(run_id, index)
            request_headers = {**(headers or {}), TRACE_HEADER: trace}
            session = None
            if sticky_header:
                session = f"session-{index % sessions}"
                request_headers[sticky_header] = session
            body = api.body(model, index, trace, stream, include_usage)
            outcome = await send_one(http, url, body, request_headers, stream, trace, api)
            outcome.session = session
            outcomes.append(outcome)
            if on_done:
                on_done()

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    outcomes.sort(key=lambda o: o.trace)
    return outcomes
