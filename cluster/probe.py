"""``llmsim probe URL``: send chat traffic through a gateway and verify how it was spread.

The instance that served each response is read from ``x-llmsim-instance``, else from
``system_fingerprint`` in the body or the stream's chunks; a response with neither was answered
by the gateway itself and counts as "unknown".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cluster import ClusterError, routing, state
from cluster.probe_report import render_report, report_json
from llmsim.identity import INSTANCE_HEADER

UNKNOWN = "unknown"


class UsageError(Exception):
    """Bad arguments or an unreachable URL: one sentence, exit code 2."""


@dataclass
class Outcome:
    status: int | None  # None: no HTTP response at all (connection refused, reset, timeout)
    instance: str
    latency: float
    ttft: float | None = None
    session: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def target_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{url!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/v1/chat/completions"
    return url


def _fingerprint(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("system_fingerprint")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


async def _one(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str], stream: bool
) -> Outcome:
    started = time.perf_counter()
    try:
        async with http.post(url, json=body, headers=headers) as response:
            instance = response.headers.get(INSTANCE_HEADER)
            ttft = None
            if stream and response.status == 200:
                async for line in response.content:
                    if not line.startswith(b"data: {"):
                        continue
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    instance = instance or _fingerprint(line[6:])
            else:
                payload = await response.read()
                instance = instance or _fingerprint(payload)
            return Outcome(response.status, instance or UNKNOWN, time.perf_counter() - started, ttft)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        return Outcome(None, UNKNOWN, time.perf_counter() - started, error=reason)


async def run_traffic(
    url: str,
    requests: int,
    concurrency: int,
    *,
    model: str = "gpt-4o-mini",
    stream: bool = False,
    headers: dict[str, str] | None = None,
    sticky_header: str | None = None,
    sessions: int = 10,
    timeout: float = 30.0,
    on_done: Any = None,
) -> list[Outcome]:
    """Send ``requests`` chat completions with at most ``concurrency`` in flight."""
    next_index = iter(range(requests))
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def worker(http: aiohttp.ClientSession) -> None:
        for index in next_index:
            request_headers = dict(headers or {})
            session = None
            if sticky_header:
                session = f"session-{index % sessions}"
                request_headers[sticky_header] = session
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"llmsim probe request {index}"}],
                "max_tokens": 16,
                "stream": stream,
            }
            outcome = await _one(http, url, body, request_headers, stream)
            outcome.session = session
            outcomes.append(outcome)
            if on_done:
                on_done()

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return outcomes


@dataclass
class Result:
    url: str
    outcomes: list[Outcome]
    distribution: routing.Distribution | None
    affinity: routing.Affinity | None
    max_error_rate: float
    stream: bool
    elapsed: float

    @property
    def error_rate(self) -> float:
        return sum(not o.ok for o in self.outcomes) / max(1, len(self.outcomes))

    @property
    def passed(self) -> bool:
        checks = [self.error_rate <= self.max_error_rate]
        if self.distribution is not None:
            checks.append(self.distribution.passed)
        if self.affinity is not None:
            checks.append(self.affinity.passed)
        return all(checks)


def evaluate(
    url: str,
    outcomes: list[Outcome],
    *,
    weights: dict[str, float] | None,
    check_distribution: bool,
    instances: list[str] | int | None,
    alpha: float,
    max_error_rate: float,
    stream: bool,
    elapsed: float,
) -> Result:
    served = Counter(o.instance for o in outcomes if o.instance != UNKNOWN)
    dist = routing.distribution(served, alpha, weights, instances) if check_distribution else None
    pairs = [(o.session, o.instance) for o in outcomes if o.session and o.instance != UNKNOWN]
    aff = routing.affinity(pairs) if any(o.session for o in outcomes) else None
    return Result(url, outcomes, dist, aff, max_error_rate, stream, elapsed)


def _instances(value: str | None, run_dir: str | None) -> list[str] | int | None:
    if value:
        if value.isdigit():
            return int(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    cluster = state.load(run_dir)
    return [i.id for i in cluster.instances] if cluster else None


def _headers(values: list[str], api_key: str | None) -> dict[str, str]:
    headers = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header takes K:V, got {item!r}")
        headers[name.strip()] = value.strip()
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmsim probe",
        description="Send chat completions through a gateway and verify how it spread them across "
        "llmsim instances. Exit code: 0 verdict passed, 1 distribution/affinity/error check "
        "failed, 2 usage error or unreachable URL.",
    )
    p.add_argument(
        "url", help="gateway or instance URL; /v1/chat/completions is appended when it has no path"
    )
    p.add_argument("--requests", "-n", type=int, default=200, help="requests to send (default 200)")
    p.add_argument("--concurrency", "-c", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--stream", action="store_true", help="stream responses; also reports TTFT")
    p.add_argument("--model", default="gpt-4o-mini", help="model to ask for (default gpt-4o-mini)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument(
        "--header", "-H", action="append", default=[], metavar="K:V", help="extra header (repeatable)"
    )
    p.add_argument(
        "--expect",
        help="'uniform' (the default without --sticky-header) or weights such as sim-1=3,sim-2=1",
    )
    p.add_argument(
        "--alpha", type=float, default=0.01, help="significance level of the chi-square test (0.01)"
    )
    p.add_argument(
        "--instances",
        help="IDs expected to get traffic (comma list) or just how many; default: the local cluster's",
    )
    p.add_argument(
        "--run-dir", help="local cluster run dir to read instance IDs from (default .llmsim/default)"
    )
    p.add_argument("--sticky-header", metavar="NAME", help="check session affinity on this header instead")
    p.add_argument(
        "--sessions", type=int, default=10, help="distinct session values with --sticky-header (10)"
    )
    p.add_argument(
        "--max-error-rate", type=float, default=0.0, help="fraction of failed requests still passing (0.0)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (30)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of tables")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        return _run(args)
    except (UsageError, ClusterError) as exc:
        err.print(f"[red]llmsim probe:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - whatever it is, one sentence, no traceback
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        err.print(
            f"[red]llmsim probe:[/] {escape(f'{type(exc).__name__}: {why}')}", highlight=False, soft_wrap=True
        )
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.concurrency < 1 or args.sessions < 1:
        raise UsageError("--requests, --concurrency and --sessions must be at least 1")
    if not 0 < args.alpha < 1:
        raise UsageError("--alpha must be between 0 and 1")
    url = target_url(args.url)
    try:
        weights = routing.parse_expect(args.expect) if args.expect else None
    except ValueError as exc:
        raise UsageError(f"--expect: {exc}") from None
    check_distribution = args.expect is not None or not args.sticky_header
    instances = _instances(args.instances, args.run_dir)
    headers = _headers(args.header, args.api_key)
    console = Console() if Console().is_terminal else Console(width=120)

    started = time.perf_counter()
    with Progress(
        TextColumn("probing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json,
    ) as progress:
        task = progress.add_task("probe", total=args.requests)
        outcomes = asyncio.run(
            run_traffic(
                url,
                args.requests,
                args.concurrency,
                model=args.model,
                stream=args.stream,
                headers=headers,
                sticky_header=args.sticky_header,
                sessions=args.sessions,
                timeout=args.timeout,
                on_done=lambda: progress.advance(task),
            )
        )
    elapsed = time.perf_counter() - started
    if all(o.status is None for o in outcomes):
        raise UsageError(f"could not reach {url}: {outcomes[0].error}")

    result = evaluate(
        url,
        outcomes,
        weights=weights,
        check_distribution=check_distribution,
        instances=instances,
        alpha=args.alpha,
        max_error_rate=args.max_error_rate,
        stream=args.stream,
        elapsed=elapsed,
    )
    if args.json:
        sys.stdout.write(json.dumps(report_json(result), indent=2) + "\n")
    else:
        render_report(result, console)
    return 0 if result.passed else 1
