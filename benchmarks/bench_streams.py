"""Stream capacity (issue 11): how many concurrent 100-token streams at ITL 20 ms one instance keeps
on time.

One ``llmsim serve`` (lorem, 100 output tokens, ITL 20 ms, prefill overhead 50 ms) pinned to the
first CPU; the load generator is several client processes pinned to the second, each a uvloop
loop of raw asyncio protocols, one keep-alive connection per concurrent stream (a "slot"). A slot
sends a stream request, and the next one as soon as the last ends, so N streams are in flight at
every moment of a step. The slots' first requests are spread over ``RAMP_S``; after a settling
second, every content chunk that arrives in the steady window is measured:

- ITL: the gap between consecutive content chunks of one stream (client arrival times, taken in
  ``data_received`` before anything else; a read carrying two chunks gives them the same time);
- TTFT: request written -> first content chunk, for the streams sent in the window (plan: 50 ms).

Over the window the parent reads the server's and the clients' CPU time (/proc/<pid>/stat, with
the server's kernel share), each CPU's busy share (/proc/stat) and how long each process waited,
runnable, for its CPU (/proc/<pid>/schedstat), so a step can say which side ran out; and a
sitecustomize put on the server's PYTHONPATH (llmsim itself is untouched) times the server's
cyclic-GC collections, which pause every stream at once. Steps rise (500, 1,000, 1,500, 2,000,
3,000) and stop after the first whose p99 ITL error passes +50 ms.

Knobs (environment): BENCH_STREAM_STEPS ("500,1000,1500,2000,3000"), BENCH_STREAM_CLIENTS (client
processes, 4), BENCH_STREAM_WINDOW (seconds measured a step, 5), BENCH_STREAM_PROFILE (a step, e.g.
1000: py-spy samples the server during that step's window, pinned with the clients, which it
disturbs; own time of the innermost Python frames is printed and kept), BENCH_STREAM_SERVER_GC
(off: the server runs with the GC disabled; freeze: gc.freeze() once warm; experiments),
BENCH_LLMSIM_SRC (as for bench_core: a directory put first on the server's PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import harness

ITL_MS = 20.0
TTFT_MS = 50.0
TOKENS = 100
RAMP_S = 1.0  # the slots' first requests are spread over this
SETTLE_S = 1.0  # after the ramp, before the window: every slot is streaming by then
START_S = 1.5  # client processes' start-up (imports, connections) before the ramp begins
DRAIN_S = 20.0  # in-flight streams get this long after the window to finish
STOP_P99_MS = 50.0
TARGETS = {"streams": 1500, "itl_median_error_pct": 5.0, "itl_p99_error_ms": 10.0}

MARK = b'"delta":{"content":'  # content chunks only (the role chunk's delta starts with "role")
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body
TAIL = max(len(MARK), len(END)) - 1  # bytes kept from the last read: a marker may straddle two reads


# --- the client processes ----------------------------------------------------------------------


class _Stream(asyncio.Protocol):
    """One keep-alive connection; stamps each read and counts the content chunks in it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bool] | None = None
        self.times = array("d")
        self.tail = b""
        self.head = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def begin(self, request: bytes) -> float:
        self.done = asyncio.get_running_loop().create_future()
        self.times = array("d")
        self.tail, self.head = b"", True
        sent = time.monotonic()
        assert self.transport is not None
        self.transport.write(request)
        return sent

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        chunk = self.tail + data
        if self.head:
            self.head = False
            if not chunk.startswith(b"HTTP/1.1 200"):
                self._finish(False)
                return
        count = chunk.count(MARK)
        if count:
            self.times.extend((now,) * count)
        self.tail = chunk[-TAIL:]
        if chunk.endswith(END):
            self._finish(True)

    def _finish(self, ok: bool) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(False)


async def _clients(spec: dict) -> dict:
    loop = asyncio.get_running_loop()
    body = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a long answer."}], "stream": True}
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"x-llmsim-output-tokens: %d\r\ncontent-length: %d\r\n\r\n%s" % (TOKENS, len(body), body)
    )
    t0, total, port = spec["t0"], spec["total"], spec["port"]
    win_start, win_end = spec["window"]
    gaps: list[float] = []
    ttfts: list[float] = []
    counts = {"sent": 0, "completed": 0, "errors": 0, "short": 0, "chunks_in_window": 0}

    async def slot(index: int) -> None:
        await asyncio.sleep(max(0.0, t0 + RAMP_S * index / total - time.monotonic()))
        conn: _Stream | None = None
        while time.monotonic() < win_end:
            try:
                if conn is None or conn.closed:
                    _, conn = await loop.create_connection(_Stream, "127.0.0.1", port)
                sent = conn.begin(request)
                counts["sent"] += 1
                ok = await conn.done
            except (OSError, asyncio.TimeoutError):
                counts["errors"] += 1
                conn = None
                await asyncio.sleep(0.1)
                continue
            times = conn.times
            if not ok:
                counts["errors"] += 1
                if conn.transport is not None:
                    conn.transport.close()
                conn = None
                continue
            counts["completed"] += 1
            if len(times) != TOKENS:
                counts["short"] += 1
            if win_start <= sent < win_end and times:
                ttfts.append((times[0] - sent) * 1000)
            for a, b in zip(times, times[1:], strict=False):
                if win_start <= b < win_end:
                    gaps.append(round((b - a) * 1000, 3))
                    counts["chunks_in_window"] += 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    tasks = [asyncio.ensure_future(slot(i)) for i in spec["slots"]]
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, win_end + DRAIN_S - time.monotonic()))
    for task in pending:
        task.cancel()
    counts["unfinished"] = len(pending)
    return {"gaps": gaps, "ttfts": ttfts, **counts}


def client_main() -> None:
    spec = json.loads(sys.argv[2])
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    result = run(_clients(spec))
    Path(spec["out"]).write_text(json.dumps(result))  # a file, not stdout: large, and not a pipe


# --- the parent --------------------------------------------------------------------------------

# Put on the server's PYTHONPATH (a sitecustomize of its own; llmsim is not touched): times each of
# the server's cyclic-GC collections, which stop every stream at once, and writes them at exit.
# BENCH_STREAM_SERVER_GC=off|freeze runs the server with the GC disabled, or frozen (gc.freeze()
# 6 s after start, once it is warm): experiments on what the collections cost.
GC_PROBE = """\
import atexit, gc, os, signal, time

_path = os.environ.get("BENCH_GC_LOG")
if _path:
    _log, _start = [], [0.0]

    def _timed(phase, info, _now=time.perf_counter):
        if phase == "start":
            _start[0] = _now()
        else:
            _log.append((time.monotonic(), info["generation"], _now() - _start[0]))

    gc.callbacks.append(_timed)

    def _write():
        with open(_path, "w") as out:
            out.writelines("%.6f %d %.6f\\n" % row for row in _log)

    atexit.register(_write)

    def _on_term(signum, frame):  # uvicorn re-raises SIGTERM after its shutdown: no atexit then
        _write()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _on_term)
    _mode = os.environ.get("BENCH_GC_MODE", "")
    if _mode == "off":
        gc.disable()
    elif _mode == "freeze":
        import threading

        def _freeze():
            gc.collect()
            gc.freeze()

        threading.Timer(6.0, _freeze).start()
"""


def read_gc_log(path: Path) -> list[tuple[float, int, float]]:
    """(monotonic time at the end, generation, seconds) of each collection the server logged."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        end, generation, seconds = line.split()
        rows.append((float(end), int(generation), float(seconds)))
    return rows


def gc_in(log: list[tuple[float, int, float]], start: float, end: float) -> dict:
    """The server's collections that ended inside a window: count, total and longest pause (ms), and
    how many were full (generation 2)."""
    inside = [(g, d * 1000) for t, g, d in log if start <= t < end]
    return {
        "collections": len(inside),
        "full": sum(1 for g, _ in inside if g == 2),
        "total_ms": sum(d for _, d in inside),
        "max_ms": max((d for _, d in inside), default=0.0),
        "max_young_ms": max((d for g, d in inside if g < 2), default=0.0),
    }


def cpu_busy() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each CPU."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = list(map(int, values[:8]))
            idle = v[3] + v[4]
            out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out


def system_seconds(pid: int) -> float | None:
    """stime alone: the server's CPU time in the kernel (the writes, loopback TCP included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def runqueue_wait(pid: int) -> float | None:
    """Seconds the process's main thread has waited, runnable, for a CPU (/proc/<pid>/schedstat):
    time another task took from it, which its CPU figures cannot show."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _pct(before: float | None, after: float | None, seconds: float) -> float | None:
    return None if before is None or after is None else (after - before) / seconds * 100


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def run_clients(
    server: harness.Server, client_pin: list[str], streams: int, processes: int, window: float, profile: bool
) -> tuple[list[dict], dict]:
    """One step's client processes; their results and what the parent read over the window."""
    assert server.process is not None
    t0 = time.monotonic() + START_S
    win_start = t0 + RAMP_S + SETTLE_S
    win_end = win_start + window
    clients: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        try:
            for p in range(processes):
                spec = {
                    "t0": t0,
                    "total": streams,
                    "port": server.port,
                    "window": [win_start, win_end],
                    "slots": list(range(p, streams, processes)),
                    "out": str(Path(tmp) / f"client-{p}.json"),
                }
                argv = [*client_pin, sys.executable, __file__, "client", json.dumps(spec)]
                clients.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
            time.sleep(max(0.0, win_start - time.monotonic()))
            spy = _start_profile(server.process.pid, client_pin, window, streams) if profile else None
            cpus0, server0, sys0 = cpu_busy(), server.cpu_seconds(), system_seconds(server.process.pid)
            clients0 = [harness.process_cpu_seconds(c.pid) for c in clients]
            waits0 = [runqueue_wait(pid) for pid in (server.process.pid, *(c.pid for c in clients))]
            time.sleep(max(0.0, win_end - time.monotonic()))
            cpus1, server1, sys1 = cpu_busy(), server.cpu_seconds(), system_seconds(server.process.pid)
            clients1 = [harness.process_cpu_seconds(c.pid) for c in clients]
            waits1 = [runqueue_wait(pid) for pid in (server.process.pid, *(c.pid for c in clients))]
            results = []
            for p, c in enumerate(clients):
                code = c.wait(timeout=START_S + RAMP_S + SETTLE_S + window + DRAIN_S + 30)
                if code != 0:
                    raise RuntimeError(f"client process {p} exited with {code}")
                results.append(json.loads((Path(tmp) / f"client-{p}.json").read_text()))
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
                    c.wait()
    read = {
        "server_pct": _pct(server0, server1, window),
        "server_sys_pct": _pct(sys0, sys1, window),
        "client_pct": [_pct(a, b, window) for a, b in zip(clients0, clients1, strict=False)],
        "busy": {
            cpu: (cpus1[cpu][0] - cpus0[cpu][0]) / max(1, cpus1[cpu][1] - cpus0[cpu][1]) * 100
            for cpu in cpus1
        },
        "profile": _finish_profile(spy) if spy is not None else None,
        "window": (win_start, win_end),
        "waits_ms": [
            None if a is None or b is None else (b - a) * 1000 for a, b in zip(waits0, waits1, strict=False)
        ],
    }
    return results, read


def run_step(
    server: harness.Server, client_pin: list[str], streams: int, processes: int, window: float, profile: bool
) -> dict:
    results, read = run_clients(server, client_pin, streams, processes, window, profile)
    hot = read["profile"]

    gaps = sorted(g for r in results for g in r["gaps"])
    ttfts = sorted(t for r in results for t in r["ttfts"])
    total = {k: sum(r[k] for r in results) for k in ("sent", "completed", "errors", "short", "unfinished")}
    chunks = sum(r["chunks_in_window"] for r in results)
    server_pct, client_pct, busy = read["server_pct"], read["client_pct"], read["busy"]
    server_sys = read["server_sys_pct"]
    itl_median = statistics.median(gaps) if gaps else float("nan")
    ttft_median = statistics.median(ttfts) if ttfts else float("nan")
    chunk_rate = chunks / window
    figures = {
        "streams": streams,
        "gaps": len(gaps),
        "ttfts": len(ttfts),
        **total,
        "chunks_per_s": chunk_rate,
        "itl_median_ms": itl_median,
        "itl_median_error_ms": itl_median - ITL_MS,
        "itl_median_error_pct": (itl_median - ITL_MS) / ITL_MS * 100,
        "itl_p99_ms": percentile(gaps, 0.99),
        "itl_p99_error_ms": percentile(gaps, 0.99) - ITL_MS,
        "itl_p99_error_pct": (percentile(gaps, 0.99) - ITL_MS) / ITL_MS * 100,
        "ttft_median_ms": ttft_median,
        "ttft_median_error_ms": ttft_median - TTFT_MS,
        "ttft_median_error_pct": (ttft_median - TTFT_MS) / TTFT_MS * 100,
        "ttft_p99_error_ms": percentile(ttfts, 0.99) - TTFT_MS,
        "server_cpu_pct": server_pct,
        "server_sys_pct": server_sys,  # of which in the kernel (stime): mostly the sockets' writes
        # ms the server / each client process waited, runnable, for its CPU during the window
        "server_runqueue_ms": read["waits_ms"][0],
        "clients_runqueue_ms": read["waits_ms"][1:],
        "clients_cpu_pct": sum(c for c in client_pct if c is not None),
        "cpu_busy_pct": busy,
        "server_us_per_chunk": (server_pct / 100 * window / chunks * 1e6) if server_pct and chunks else None,
    }
    if hot is not None:
        figures["profile"] = hot
    figures["_window"] = read["window"]  # replaced by the server's GC figures once it has stopped
    return figures


def _start_profile(pid: int, pin: list[str], window: float, streams: int) -> subprocess.Popen | None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("py-spy not found next to the interpreter; no profile", flush=True)
        return None
    out = harness.RESULTS / f"streams-profile-{streams}.txt"
    argv = [*pin, str(spy), "record", "-r", "100", "-f", "raw", "--nonblocking", "--function"]
    argv += ["-d", str(max(1, int(window))), "-p", str(pid), "-o", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.out = out  # type: ignore[attr-defined]
    return proc


def _finish_profile(spy: subprocess.Popen) -> list[tuple[str, float]]:
    """Own time of the innermost Python frame, as shares of all samples (top 15)."""
    try:
        spy.wait(timeout=60)
        lines = Path(spy.out).read_text().splitlines()  # type: ignore[attr-defined]
    except (OSError, subprocess.TimeoutExpired):
        spy.kill()
        return []
    own: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        leaf = frames[-1] if frames else "(no Python frame)"
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    return [(name, n / total * 100) for name, n in ranked] if total else []


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None or value != value else f"{value:{spec}}{suffix}"


def verdict(f: dict) -> str:
    ok = (
        abs(f["itl_median_error_pct"]) < TARGETS["itl_median_error_pct"]
        and f["itl_p99_error_ms"] < TARGETS["itl_p99_error_ms"]
        and not f["errors"]
        and not f["unfinished"]
        and not f["short"]
    )
    return "held" if ok else "MISSED"


def main() -> None:
    import httpx
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    steps = [int(s) for s in os.environ.get("BENCH_STREAM_STEPS", "500,1000,1500,2000,3000").split(",")]
    processes = int(os.environ.get("BENCH_STREAM_CLIENTS", "4"))
    window = float(os.environ.get("BENCH_STREAM_WINDOW", "5"))
    profile_step = int(os.environ.get("BENCH_STREAM_PROFILE", "0") or 0)
    server_pin, client_pin = harness.cpu_pins()
    argv = [sys.executable, "-m", "llmsim", "serve", "--port", "{port}", "--response-mode", "lorem"]
    argv += ["--output-tokens", str(TOKENS), "--itl", f"{ITL_MS:g}", "--prefill-overhead", f"{TTFT_MS:g}"]
    probe_dir = Path(tempfile.mkdtemp(prefix="bench-streams-gc-"))
    (probe_dir / "sitecustomize.py").write_text(GC_PROBE)
    gc_log = probe_dir / "gc.log"
    gc_mode = os.environ.get("BENCH_STREAM_SERVER_GC", "")
    path = [os.environ.get("BENCH_LLMSIM_SRC"), str(probe_dir), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p), "BENCH_GC_LOG": str(gc_log)}
    server = harness.Server("streams-target", argv, env={**env, "BENCH_GC_MODE": gc_mode})
    console.rule(
        f"[bold]stream capacity: {TOKENS}-token streams, ITL {ITL_MS:g} ms, TTFT {TTFT_MS:g} ms, "
        f"{processes} client processes"
    )
    rows: list[dict] = []
    try:
        server.start(server_pin)  # on harness.free_port(): below the ephemeral range
        server.wait_ready()
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "warm up"}], "stream": True}
        fast = {"x-llmsim-ttft-ms": "0", "x-llmsim-itl-ms": "0"}
        for _ in range(20):  # the vocabulary loads on first use; lorem's caches fill
            httpx.post(url, json=body, headers=fast, timeout=30)
        text = httpx.post(url, json=body, timeout=30).text
        count = text.count(MARK.decode())
        console.print(f"server on {server.url} (pid {server.process.pid}); check: {count} content chunks")
        if count != TOKENS:
            raise RuntimeError(f"expected {TOKENS} content chunks a stream, got {count}")
        for streams in steps:
            figures = run_step(server, client_pin, streams, processes, window, streams == profile_step)
            rows.append(figures)
            console.print(
                f"{streams} streams: ITL median {figures['itl_median_error_pct']:+.1f}%, "
                f"p99 {figures['itl_p99_error_ms']:+.1f} ms, server CPU {_fmt(figures['server_cpu_pct'], '.0f')}%"
                f", clients CPU {figures['clients_cpu_pct']:.0f}%",
                highlight=False,
            )
            if (
                figures["itl_p99_error_ms"] > STOP_P99_MS
                or figures["itl_p99_error_ms"] != figures["itl_p99_error_ms"]
            ):
                break
            time.sleep(1.0)
    finally:
        server.stop()
        log = read_gc_log(gc_log)
        shutil.rmtree(probe_dir, ignore_errors=True)
    for f in rows:
        f["server_gc"] = gc_in(log, *f.pop("_window"))

    title = f"stream capacity: ITL {ITL_MS:g} ms, TTFT plan {TTFT_MS:g} ms, {window:g} s windows"
    table = Table(title=title + (f", server GC {gc_mode}" if gc_mode else ""))
    columns = [
        "streams",
        "done / err",
        "chunks/s",
        "ITL med err",
        "ITL p99 err",
        "TTFT med err",
        "TTFT p99 err",
        "server CPU",
        "clients CPU",
        "CPU0 / CPU1 busy",
        "server µs/chunk",
        "server GC in window",
        "waited for CPU srv / cli",
        "target",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for f in rows:
        busy = f["cpu_busy_pct"]
        pins = sorted(busy)[:2]
        table.add_row(
            f"{f['streams']:,}",
            f"{f['completed']:,} / {f['errors'] + f['unfinished'] + f['short']}",
            f"{f['chunks_per_s']:,.0f}",
            f"{f['itl_median_error_ms']:+.2f} ms ({f['itl_median_error_pct']:+.1f}%)",
            f"{f['itl_p99_error_ms']:+.1f} ms",
            f"{f['ttft_median_error_ms']:+.1f} ms ({f['ttft_median_error_pct']:+.0f}%)",
            f"{f['ttft_p99_error_ms']:+.1f} ms",
            f"{_fmt(f['server_cpu_pct'], '.0f', '%')} ({_fmt(f['server_sys_pct'], '.0f', '%')} sys)",
            _fmt(f["clients_cpu_pct"], ".0f", "%"),
            " / ".join(f"{busy[c]:.0f}%" for c in pins),
            _fmt(f["server_us_per_chunk"], ".1f"),
            "{collections} ({full} full): {total_ms:.0f} ms, max {max_ms:.0f}".format(**f["server_gc"]),
            f"{_fmt(f['server_runqueue_ms'], '.0f')} / "
            f"{_fmt(sum(w for w in f['clients_runqueue_ms'] if w is not None), '.0f')} ms",
            verdict(f),
        )
    console.print(table)
    for f in rows:
        if "profile" in f:
            console.print(f"server own time at {f['streams']} streams (py-spy, innermost Python frame):")
            for name, share in f["profile"]:
                console.print(f"  {share:5.1f} %  {name}", highlight=False)
    held = [f["streams"] for f in rows if verdict(f) == "held"]
    console.print(
        f"largest step held: {max(held):,} streams" if held else "no step held the target", highlight=False
    )
    path = harness.write_results(
        "streams",
        {
            "date": datetime.date.today().isoformat(),
            "machine": harness.machine(),
            "pinning": {"server": server_pin, "clients": client_pin, "client_processes": processes},
            "server_gc_mode": gc_mode or "as shipped",
            "plan": {"itl_ms": ITL_MS, "ttft_ms": TTFT_MS, "tokens": TOKENS, "window_s": window},
            "targets": TARGETS,
            "steps": rows,
            "largest_held": max(held) if held else 0,
        },
    )
    console.print(f"results written to {path}")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "client":
    client_main()
