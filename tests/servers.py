"""Start real `llmsim serve` processes on free loopback ports for the tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmsim_cluster import ports

free_port = ports.pick_free  # the tests' ports: below the ephemeral range


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
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def gateway(argv: Sequence[str], log: Path, port: int, what: str) -> Iterator[str]:
    """Run a gateway (nginx, haproxy) with its output in ``log``; yield its URL once it answers
    anything (the instances' 404 for an unknown path means it accepts and forwards); stop it."""
    with open(log, "wb") as out:  # a file, not a pipe: a test that reads nothing must not block it
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or httpx.get(f"{url}/{what}-probe", timeout=1).status_code,
            what=what,
        )
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        yield url
    finally:
        stop(process)


HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def open_request(
    server: Server, headers: dict[str, str], body: dict[str, Any] | None = None
) -> socket.socket:
    """Send a chat request on a connection of its own and return without reading the answer."""
    data = json.dumps(body or HELLO).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"host: 127.0.0.1:{server.port}",
        "content-type: application/json",
        f"content-length: {len(data)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return sock
