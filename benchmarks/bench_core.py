"""Core simulator throughput against its floors, side by side in one run.

Non-streaming: bare ASGI floor vs ``llmsim serve`` (echo mode, defaults).
Streaming (50 SSE events a response): bare Starlette StreamingResponse floor vs sse-starlette's
EventSourceResponse vs ``llmsim serve --response-mode lorem --output-tokens 47``.

Servers are pinned to the first CPU, wrk to the second. Knobs (environment): BENCH_DURATION
(seconds a run, 8), BENCH_REPEATS (runs a case, best kept, 2), BENCH_CONNECTIONS (64),
BENCH_LLMSIM_SRC (a directory put first on PYTHONPATH of the llmsim servers, to bench a copy).
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass

import harness
import httpx
from floors import STREAM_EVENTS
from rich.console import Console
from rich.table import Table

TARGETS = {"non-streaming": 0.4, "streaming": 0.6}
HISTORY = {
    "non-streaming": "cc14514/llm-simulator 0.155x, best Python peer 0.19x",
    "streaming": "sse-starlette EventSourceResponse 0.52x",
}
WARMUP_S = 2.0


@dataclass
class Case:
    group: str  # "non-streaming" or "streaming"
    name: str
    server: harness.Server
    script: str
    role: str  # "floor", "llmsim" or "reference"
    events: int = 1  # SSE events a response (1 for non-streaming)


def _uvicorn(name: str, app: str) -> harness.Server:
    # The options llmsim's `serve` passes to uvicorn.run (llmsim/cli.py _serve), loop/http auto.
    argv = [sys.executable, "-m", "uvicorn", f"floors:{app}", "--app-dir", str(harness.HERE)]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "info"]
    argv += ["--no-access-log", "--no-server-header"]
    return harness.Server(name, argv, ready_path="/")


def _llmsim(name: str, *flags: str) -> harness.Server:
    env = {}
    src = os.environ.get("BENCH_LLMSIM_SRC")
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "llmsim", "serve", "--port", "{port}", *flags]
    return harness.Server(name, argv, env=env)


def cases() -> list[Case]:
    return [
        Case("non-streaming", "floor: bare ASGI", _uvicorn("floor-plain", "plain"), "chat.lua", "floor"),
        Case("non-streaming", "llmsim echo", _llmsim("llmsim-echo"), "chat.lua", "llmsim"),
        Case(
            "streaming",
            "floor: StreamingResponse",
            _uvicorn("floor-stream", "streaming"),
            "chat_stream.lua",
            "floor",
            STREAM_EVENTS,
        ),
        Case(
            "streaming",
            "sse-starlette EventSource",
            _uvicorn("floor-sse", "sse"),
            "chat_stream.lua",
            "reference",
            STREAM_EVENTS,
        ),
        Case(
            "streaming",
            "llmsim lorem 47 tokens",
            _llmsim("llmsim-lorem", "--response-mode", "lorem", "--output-tokens", str(STREAM_EVENTS - 3)),
            "chat_stream.lua",
            "llmsim",
            STREAM_EVENTS,
        ),
    ]


def lua_body(script: str) -> bytes:
    """The request body a wrk script sends (its ``wrk.body = [[...]]``), so httpx sends the same."""
    text = (harness.HERE / script).read_text()
    return re.search(r"wrk\.body = \[\[(.*?)\]\]", text, re.S).group(1).encode()


def check(case: Case, console: Console) -> None:
    """One request with httpx: a 200 of the right kind, and the number of SSE events."""
    headers = {"content-type": "application/json"}
    url = case.server.url + "/v1/chat/completions"
    response = httpx.post(url, content=lua_body(case.script), headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"{case.name}: HTTP {response.status_code}: {response.text[:300]}")
    if case.group == "streaming":
        events = sum(1 for line in response.text.splitlines() if line.startswith("data:"))
        console.print(f"  {case.name}: {events} SSE data events a response, {len(response.content)} bytes")
        if events != case.events:
            raise RuntimeError(f"{case.name}: expected {case.events} SSE events, got {events}")
    else:
        kind = response.json().get("object")
        console.print(f"  {case.name}: {kind}, {len(response.content)} bytes")
        if kind != "chat.completion":
            raise RuntimeError(f"{case.name}: unexpected body {response.text[:300]}")


def main() -> None:
    console = Console(width=max(Console().width, 100))
    duration = float(os.environ.get("BENCH_DURATION", "8"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "64"))
    wrk = harness.ensure_wrk()
    server_pin, wrk_pin = harness.cpu_pins()
    all_cases = cases()
    runs: dict[str, list[harness.WrkResult]] = {case.name: [] for case in all_cases}
    console.rule("[bold]core: llmsim vs floors")
    console.print(
        f"server pinned: {' '.join(server_pin) or 'no'}; wrk pinned: {' '.join(wrk_pin) or 'no'}; "
        f"wrk -t1 -c{connections} -d{duration:g}s, {repeats} round(s), best kept"
    )
    try:
        for case in all_cases:
            case.server.start(server_pin)
        for case in all_cases:
            case.server.wait_ready()
        for case in all_cases:
            check(case, console)
        for case in all_cases:
            url = case.server.url
            harness.run_wrk(wrk, wrk_pin, url, harness.HERE / case.script, WARMUP_S, connections=connections)
        for round_no in range(1, repeats + 1):
            for case in all_cases:
                result = harness.run_wrk(
                    wrk,
                    wrk_pin,
                    case.server.url,
                    harness.HERE / case.script,
                    duration,
                    connections=connections,
                )
                runs[case.name].append(result)
                console.print(
                    f"  round {round_no}  {case.name:<26} {result.rps:>9.0f} req/s"
                    + (f"  [red]{result.errors} errors[/red]" if result.errors else "")
                )
    finally:
        for case in all_cases:
            case.server.stop()

    report = summarize(all_cases, runs)
    console.print(table(report))
    payload = {
        "date": datetime.date.today().isoformat(),
        "machine": harness.machine(),
        "wrk": {"threads": 1, "connections": connections, "duration_s": duration, "repeats": repeats},
        "pinning": {"server": server_pin, "wrk": wrk_pin},
        "targets": TARGETS,
        "history": HISTORY,
        **report,
    }
    path = harness.write_results("core", payload)
    console.print(f"results written to {path}")


def summarize(all_cases: list[Case], runs: dict[str, list[harness.WrkResult]]) -> dict:
    groups: dict[str, dict] = {}
    for case in all_cases:
        best = max(runs[case.name], key=lambda r: r.rps)
        group = groups.setdefault(case.group, {"cases": []})
        group["cases"].append(
            {
                "name": case.name,
                "role": case.role,
                "server": case.server.name,
                "rps": round(best.rps, 1),
                "rps_runs": [round(r.rps, 1) for r in runs[case.name]],
                "events_per_response": case.events,
                "chunks_per_s": round(best.rps * case.events, 1) if case.group == "streaming" else None,
                "p50_ms": round(best.p50_ms, 2),
                "p99_ms": round(best.p99_ms, 2),
                "errors": best.errors,
            }
        )
    for name, group in groups.items():
        floor = next(c["rps"] for c in group["cases"] if c["role"] == "floor")
        for c in group["cases"]:
            c["ratio_to_floor"] = round(c["rps"] / floor, 3) if floor else None
        llmsim = next(c for c in group["cases"] if c["role"] == "llmsim")
        group["llmsim_ratio"] = llmsim["ratio_to_floor"]
        group["target"] = TARGETS[name]
        group["meets_target"] = bool(llmsim["ratio_to_floor"] and llmsim["ratio_to_floor"] >= TARGETS[name])
    return {"groups": groups}


def table(report: dict) -> Table:
    t = Table(title="llmsim vs floors: best run; ratio = req/s / the group's floor")
    for column in ("server", "req/s", "chunks/s", "p50 ms", "p99 ms", "err", "ratio", "target"):
        t.add_column(column, justify="left" if column == "server" else "right")
    for name, group in report["groups"].items():
        t.add_row(f"[bold]{name}", *[""] * 7)
        for c in group["cases"]:
            verdict = ""
            if c["role"] == "llmsim":
                ok = group["meets_target"]
                verdict = f"[{'green' if ok else 'red'}]{group['target']}x {'ok' if ok else 'MISS'}"
            t.add_row(
                "  " + c["name"],
                f"{c['rps']:,.0f}",
                f"{c['chunks_per_s']:,.0f}" if c["chunks_per_s"] is not None else "-",
                f"{c['p50_ms']:.1f}",
                f"{c['p99_ms']:.1f}",
                str(c["errors"]),
                f"{c['ratio_to_floor']:.3f}x",
                verdict,
            )
    return t


if __name__ == "__main__":
    main()
