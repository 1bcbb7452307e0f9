"""The probe must not be the bottleneck of a routing check: its request rate against one
zero-latency instance, next to wrk's at the same concurrency with the same requests.

Knobs (environment): BENCH_DURATION (wrk seconds, 8), BENCH_REPEATS (rounds, 2; best kept),
BENCH_PROBE_REQUESTS (requests per probe run, 8000).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import harness
from rich.console import Console
from rich.table import Table

TARGET = 0.3
CONCURRENCY = 16  # the probe's default


def _probe(pin: list[str], url: str, requests: int) -> float:
    argv = [*pin, sys.executable, "-m", "llmsim", "probe", url, "--json"]
    argv += ["--requests", str(requests), "--concurrency", str(CONCURRENCY), "--instances", "1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"probe failed ({out.returncode}): {out.stderr}")
    report = json.loads(out.stdout)
    if report["error_rate"]:
        raise RuntimeError(f"probe saw errors: {report['verdict']}")
    return float(report["requests_per_s"])


def main() -> None:
    console = Console(width=max(Console().width, 100))
    duration = float(os.environ.get("BENCH_DURATION", "8"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    requests = int(os.environ.get("BENCH_PROBE_REQUESTS", "8000"))
    wrk = harness.ensure_wrk()
    server_pin, client_pin = harness.cpu_pins()
    server = harness.Server("probe-target", [sys.executable, "-m", "llmsim", "serve", "--port", "{port}"])
    console.rule("[bold]probe: llmsim probe vs wrk, same requests, concurrency 16")
    wrk_rps: list[float] = []
    probe_rps: list[float] = []
    try:
        server.start(server_pin)
        server.wait_ready()
        script = harness.HERE / "probe.lua"
        harness.run_wrk(wrk, client_pin, server.url, script, 2, connections=CONCURRENCY)  # warm-up
        for round_no in range(1, repeats + 1):
            w = harness.run_wrk(wrk, client_pin, server.url, script, duration, connections=CONCURRENCY)
            p = _probe(client_pin, server.url, requests)
            wrk_rps.append(w.rps)
            probe_rps.append(p)
            console.print(f"  round {round_no}  wrk {w.rps:>9.0f} req/s   probe {p:>9.0f} req/s")
    finally:
        server.stop()
    best_wrk, best_probe = max(wrk_rps), max(probe_rps)
    ratio = best_probe / best_wrk
    table = Table(title="llmsim probe vs wrk (best run each)")
    for column in ("client", "req/s", "ratio", "target"):
        table.add_column(column, justify="left" if column == "client" else "right")
    table.add_row(f"wrk -t1 -c{CONCURRENCY}", f"{best_wrk:,.0f}", "1.000x", "")
    verdict = "ok" if ratio >= TARGET else "MISS"
    table.add_row(
        f"llmsim probe -c{CONCURRENCY}", f"{best_probe:,.0f}", f"{ratio:.3f}x", f"{TARGET}x {verdict}"
    )
    console.print(table)
    path = harness.write_results(
        "probe",
        {
            "date": datetime.date.today().isoformat(),
            "machine": harness.machine(),
            "concurrency": CONCURRENCY,
            "wrk_rps": wrk_rps,
            "probe_rps": probe_rps,
            "ratio": ratio,
            "target": TARGET,
        },
    )
    console.print(f"results written to {path}")
