"""Timing accuracy under load: 500 concurrent 100-token streams at ITL 20 ms on one instance.

Reports the median and p99 error of the inter-token gaps and the median TTFT error, measured by
real clients over real sockets. The server is pinned to one core; the clients (two processes of
250 streams, starts spread over 1 s so every stream is in flight together for more than a
second) to the other. Timestamps are taken as lines arrive and parsed afterwards, so client work
does not skew them. Knobs (environment): BENCH_STREAMS (500), BENCH_TOKENS (100).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import harness
from rich.console import Console
from rich.table import Table

ITL_MS = 20.0
TTFT_MS = 200.0
SPREAD_S = 1.0
TARGETS = {"itl_median_error_pct": 5.0, "itl_p99_error_ms": 10.0}


async def _client(url: str, count: int, offset: int, total: int, tokens: int) -> list[dict]:
    import aiohttp

    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Write a long answer."}],
        "stream": True,
    }
    headers = {"x-llmsim-output-tokens": str(tokens)}

    async def one(session, i: int) -> dict:
        await asyncio.sleep(SPREAD_S * (offset + i) / total)
        sent = time.perf_counter()
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            stamps = [(time.perf_counter(), line) async for line in response.content]
        content = [t for t, line in stamps if line.startswith(b"data: {") and b'"delta":{"content"' in line]
        return {
            "ttft": content[0] - sent,
            "gaps": [b - a for a, b in zip(content, content[1:], strict=False)],
        }

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        await asyncio.gather(*(session.get(f"{url}/health") for _ in range(1)))
        return await asyncio.gather(*(one(session, i) for i in range(count)))


def client_main() -> None:
    url, count, offset, total, tokens = sys.argv[2], *map(int, sys.argv[3:7])
    print(json.dumps(asyncio.run(_client(url, count, offset, total, tokens))))


def main() -> None:
    console = Console(width=max(Console().width, 100))
    streams = int(os.environ.get("BENCH_STREAMS", "500"))
    tokens = int(os.environ.get("BENCH_TOKENS", "100"))
    server_pin, client_pin = harness.cpu_pins()
    argv = [sys.executable, "-m", "llmsim", "serve", "--port", "{port}"]
    argv += ["--itl", str(ITL_MS), "--prefill-overhead", str(TTFT_MS), "--response-mode", "lorem"]
    server = harness.Server("latency-target", argv)
    console.rule(f"[bold]latency: {streams} concurrent {tokens}-token streams, ITL {ITL_MS:g} ms")
    try:
        server.start(server_pin)
        server.wait_ready()
        import httpx

        warm = {"model": "gpt-4o", "messages": [{"role": "user", "content": "warm up"}]}
        httpx.post(
            f"{server.url}/v1/chat/completions", json=warm, headers={"x-llmsim-ttft-ms": "0"}, timeout=30
        )
        half = streams // 2
        clients = [
            subprocess.Popen(
                [
                    *client_pin,
                    sys.executable,
                    __file__,
                    "client",
                    server.url,
                    str(n),
                    str(off),
                    str(streams),
                    str(tokens),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n, off in ((half, 0), (streams - half, half))
        ]
        results = [r for c in clients for r in json.loads(c.communicate(timeout=600)[0])]
    finally:
        server.stop()
    gaps = sorted(g * 1000 for r in results for g in r["gaps"])
    ttfts = sorted(r["ttft"] * 1000 for r in results)
    itl_median = statistics.median(gaps)
    itl_p99 = gaps[int(len(gaps) * 0.99)]
    ttft_median = statistics.median(ttfts)
    figures = {
        "streams": len(results),
        "gaps": len(gaps),
        "itl_median_ms": itl_median,
        "itl_median_error_pct": (itl_median - ITL_MS) / ITL_MS * 100,
        "itl_p99_ms": itl_p99,
        "itl_p99_error_ms": itl_p99 - ITL_MS,
        "ttft_median_ms": ttft_median,
        "ttft_median_error_pct": (ttft_median - TTFT_MS) / TTFT_MS * 100,
    }
    table = Table(title=f"timing accuracy: {len(results)} streams, {len(gaps)} gaps")
    for column in ("measure", "configured", "measured", "error", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    ok = abs(figures["itl_median_error_pct"]) <= TARGETS["itl_median_error_pct"]
    table.add_row(
        "ITL median",
        f"{ITL_MS:g} ms",
        f"{itl_median:.2f} ms",
        f"{figures['itl_median_error_pct']:+.1f}%",
        f"±5% {'ok' if ok else 'MISS'}",
    )
    ok = figures["itl_p99_error_ms"] <= TARGETS["itl_p99_error_ms"]
    table.add_row(
        "ITL p99",
        f"{ITL_MS:g} ms",
        f"{itl_p99:.2f} ms",
        f"{figures['itl_p99_error_ms']:+.1f} ms",
        f"+10 ms {'ok' if ok else 'MISS'}",
    )
    table.add_row(
        "TTFT median",
        f"{TTFT_MS:g} ms",
        f"{ttft_median:.1f} ms",
        f"{figures['ttft_median_error_pct']:+.1f}%",
        "",
    )
    console.print(table)
    path = harness.write_results(
        "latency",
        {
            "date": datetime.date.today().isoformat(),
            "machine": harness.machine(),
            "targets": TARGETS,
            **figures,
        },
    )
    console.print(f"results written to {path}")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "client":
    client_main()
