"""Start real `llmsim serve` processes on free loopback ports for the tests."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from cluster import ports

_handed_out: set[int] = set()


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive free loopback ports, none handed out before in this process.

    Chosen below the kernel's ephemeral range (from 20000), never from it: there any outgoing
    connection may take the port before the server binds it, and polling the port before the
    server listens can connect the socket to itself (TCP simultaneous open).
    """
    low, high = ports.ephemeral_range()
    spans = [(20000, low - count), (high + 1, 65536 - count), (1024, 65536 - count)]
    first, last = next((a, b) for a, b in spans if b - a >= 1000)
    for _ in range(1000):
        base = random.randint(first, last)
        run = range(base, base + count)
        if _handed_out.isdisjoint(run) and all(ports.is_free("127.0.0.1", p) for p in run):
            _handed_out.update(run)
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {first}-{last + count - 1}")


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except Exception:  # noqa: BLE001 - a refused connection just means "not yet"
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200


@contextmanager
def run_server(
    args: Sequence[str] = (), env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[Server]:
    port = port or free_port()
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "llmsim", "serve", "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", port, process)
    try:
        wait_until(lambda: process.poll() is not None or server.healthy(), what=f"server on {port}")
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
