"""What the request journal costs: the same llmsim with ``--journal-size 0`` and with the default
ring (10,000 entries), non-streaming, identical and unique bodies.

A warm-up run fills the ring, so the runs measure the steady state: a full ring dropping its
oldest entry. The two servers take turns on the same pinned CPU, round after round, and the medians of their
requests per CPU-second are compared (the machine is shared and noisy: a single pair of runs
says little). Budget (issue 12): at most 3 % of the non-streaming ratio.

Knobs (environment): BENCH_DURATION (seconds a run, 4), BENCH_JOURNAL_ROUNDS (6).
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys

import harness
from rich.console import Console
from rich.table import Table

BUDGET = 0.03
CASES = {"identical bodies": "chat.lua", "unique bodies": "chat_unique.lua"}


def _server(name: str, *flags: str) -> harness.Server:
    return harness.Server(name, [sys.executable, "-m", "llmsim", "serve", "--port", "{port}", *flags])


def main() -> None:
    console = Console(width=max(Console().width, 100))
    duration = float(os.environ.get("BENCH_DURATION", "4"))
    rounds = int(os.environ.get("BENCH_JOURNAL_ROUNDS", "6"))
    wrk = harness.ensure_wrk()
    server_pin, client_pin = harness.cpu_pins()
    servers = {
        "journal off": _server("journal-off", "--journal-size", "0"),
        "journal on": _server("journal-on"),
    }
    console.rule("[bold]journal: the same server with and without its request journal")
    per_cpu: dict[tuple[str, str], list[float]] = {(c, s): [] for c in CASES for s in servers}
    try:
        for server in servers.values():
            server.start(server_pin)
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():  # warm up; on the journaling one, fill its ring first
            harness.run_wrk(wrk, client_pin, server.url, harness.HERE / "chat.lua", 3)
        for round_no in range(1, rounds + 1):
            for case, script in CASES.items():
                for name, server in servers.items():
                    before = server.cpu_seconds()
                    result = harness.run_wrk(wrk, client_pin, server.url, harness.HERE / script, duration)
                    after = server.cpu_seconds()
                    if before is not None and after is not None:
                        result.server_cpu_s = after - before
                    if result.errors:
                        raise RuntimeError(f"{name}, {case}: {result.errors} errors")
                    per_cpu[(case, name)].append(result.per_cpu_s or result.rps)
                    console.print(
                        f"  round {round_no}  {case:<17} {name:<12} {per_cpu[(case, name)][-1]:>8.0f} req/CPU-s"
                    )
    finally:
        for server in servers.values():
            server.stop()
    table = Table(title=f"journal cost: median of {rounds} alternating runs, requests per CPU-second")
    for column in ("case", "journal off", "journal on", "on / off", f"budget -{BUDGET:.0%}"):
        table.add_column(column, justify="right")
    rows = {}
    for case in CASES:
        off = statistics.median(per_cpu[(case, "journal off")])
        on = statistics.median(per_cpu[(case, "journal on")])
        ratio = on / off
        rows[case] = {"off": off, "on": on, "ratio": ratio}
        verdict = "ok" if ratio >= 1 - BUDGET else "OVER"
        table.add_row(case, f"{off:,.0f}", f"{on:,.0f}", f"{ratio:.3f}x", verdict)
    console.print(table)
    harness.write_results(
        "journal",
        {
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": harness.machine(),
            "rounds": rounds,
            "duration_s": duration,
            "per_cpu_s": {f"{c} / {s}": v for (c, s), v in per_cpu.items()},
            "summary": rows,
        },
    )
