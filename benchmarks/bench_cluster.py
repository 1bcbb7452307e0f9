"""Cluster start-up and footprint: `llmsim cluster up -n 8` until all healthy, and RSS per instance.

Idle RSS is read right after start-up, before any chat request (encodings load lazily on first
use); RSS after one gpt-4o request to each instance is reported for information. Knobs
(environment): BENCH_CLUSTER_N (8), BENCH_REPEATS (rounds, 3; the median start-up is kept).
"""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import httpx
from rich.console import Console
from rich.table import Table

from llmsim_cluster import ports, state, status, supervisor

TARGETS = {"startup_s": 3.0, "idle_rss_mib": 60.0}  # issue 11: 8 instances healthy < 3 s
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello, how are you?"}]}


def _base_port(n: int) -> int:
    return ports.pick_free(n)


def _cli(run_dir: Path, *args: str | int) -> None:
    env = {**os.environ, "LLMSIM_RUN_DIR": str(run_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "llmsim", "cluster", *map(str, args)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster {args} failed: {done.stderr.strip()}")


def _rss_mib(run_dir: Path) -> list[float]:
    infos = supervisor.connect(run_dir).getAllProcessInfo()
    return [(status.rss_bytes(info["pid"]) or 0) / 2**20 for info in infos]


def one_round(n: int, with_rss: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        run_dir = Path(tmp) / "run"
        started = time.perf_counter()
        _cli(run_dir, "up", "-n", n, "--base-port", _base_port(n))
        try:
            result: dict[str, object] = {"startup_s": time.perf_counter() - started}
            if with_rss:
                result["idle_rss_mib"] = _rss_mib(run_dir)
                cluster = state.load(run_dir)
                assert cluster is not None
                for instance in cluster.instances:
                    httpx.post(
                        f"{instance.url}/v1/chat/completions", json=CHAT, timeout=30
                    ).raise_for_status()
                result["after_chat_rss_mib"] = _rss_mib(run_dir)
        finally:
            _cli(run_dir, "down")
    return result


def main() -> None:
    console = Console(width=max(Console().width, 100))
    n = int(os.environ.get("BENCH_CLUSTER_N", "8"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    console.rule(f"[bold]cluster: up -n {n}")
    rounds = [one_round(n, with_rss=(i == 0)) for i in range(repeats)]
    startups = [float(r["startup_s"]) for r in rounds]  # type: ignore[arg-type]
    idle: list[float] = rounds[0]["idle_rss_mib"]  # type: ignore[assignment]
    after: list[float] = rounds[0]["after_chat_rss_mib"]  # type: ignore[assignment]
    report = {
        "instances": n,
        "startup_s": {"median": statistics.median(startups), "all": startups},
        "idle_rss_mib": {"mean": statistics.mean(idle), "max": max(idle)},
        "after_gpt4o_rss_mib": {"mean": statistics.mean(after), "max": max(after)},
    }

    table = Table(title=f"llmsim cluster, {n} instances, {repeats} round(s)", title_justify="left")
    for column in ("metric", "measured", "target", "verdict"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def verdict(ok: bool) -> str:
        return "[green]ok[/]" if ok else "[red]over[/]"

    median = report["startup_s"]["median"]
    table.add_row(
        f"up -n {n} until all healthy (median)",
        f"{median:.2f} s",
        f"< {TARGETS['startup_s']:g} s",
        verdict(median < TARGETS["startup_s"]),
    )
    table.add_row(
        "RSS per idle instance (max)",
        f"{max(idle):.1f} MiB",
        f"< {TARGETS['idle_rss_mib']:g} MiB",
        verdict(max(idle) < TARGETS["idle_rss_mib"]),
    )
    table.add_row("RSS after one gpt-4o request (max)", f"{max(after):.1f} MiB", "-", "info")
    console.print(table)
    payload = {
        "date": datetime.date.today().isoformat(),
        "machine": harness.machine(),
        "targets": TARGETS,
        **report,
    }
    console.print(f"results written to {harness.write_results('cluster', payload)}")


if __name__ == "__main__":
    main()
