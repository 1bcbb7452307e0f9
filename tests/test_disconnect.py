"""Clients that leave free what they held at once: their slot, their place in the queue; and a
stream cut short is an abort in the metrics, not a success.

Each test gets its own instance with 2 slots and a queue of 10, so one leak cannot hide or cause
another. Clients are raw sockets: a test knows exactly when each request is in and when it left.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import Server, open_request, run_server

SLOTS, QUEUE = 2, 10
FREED_WITHIN_S = 1.0
LONG_TTFT = {"x-llmsim-ttft-ms": "600000"}  # ten minutes: only leaving ends these early
OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[Server]:
    args = ["--instance-id", "sim-disconnect", "--max-concurrency", str(SLOTS), "--max-queue", str(QUEUE)]
    with run_server(args) as srv:
        yield srv


def health(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/health", timeout=1).json()


def wait_for_load(server: Server, running: int, waiting: int, within: float) -> float:
    """Poll /health until it shows ``running`` and ``waiting``; the seconds it took."""
    started = time.monotonic()
    deadline = started + within
    while True:
        seen = health(server)
        if (seen["running"], seen["waiting"]) == (running, waiting):
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {within}s /health still shows running={seen['running']} waiting={seen['waiting']}, "
                f"expected running={running} waiting={waiting}"
            )
        time.sleep(0.01)


def leave(sockets: list[socket.socket]) -> float:
    """Close every connection (the clients give up); the moment they left."""
    for sock in sockets:
        sock.close()
    return time.monotonic()


def metric_sum(server: Server, sample_name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=2).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def successes(server: Server) -> float:
    """Requests that finished (stop, length, ...): vLLM counts aborts in the same family, under
    finished_reason="abort"; those are not successes."""
    every = metric_sum(server, "vllm:request_success_total")
    return every - metric_sum(server, "vllm:request_success_total", finished_reason="abort")


def abort_reasons(server: Server) -> float:
    return metric_sum(server, "vllm:request_success_total", finished_reason="abort")


def aborts(server: Server) -> float:
    return metric_sum(server, "llmsim_requests_total", endpoint=CHAT, status="499")


def settles_at(read: Callable[[], float], expected: float, what: str, within: float = 2.0) -> None:
    """A counter is updated once the response is over: give it until ``within`` to get there."""
    deadline = time.monotonic() + within
    while read() != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read() == expected, f"{what} is {read()}, expected {expected}"


def test_clients_leaving_before_the_first_token_free_their_slots(server: Server) -> None:
    before = successes(server), aborts(server)
    clients = [open_request(server, LONG_TTFT) for _ in range(SLOTS)]
    wait_for_load(server, running=SLOTS, waiting=0, within=5)
    time.sleep(0.2)  # the clients wait a little, then give up
    leave(clients)
    wait_for_load(server, running=0, waiting=0, within=FREED_WITHIN_S)
    response = httpx.post(f"{server.url}{CHAT}", json=OK, timeout=5)
    assert response.status_code == 200, response.text
    # The two that left are aborts (499), never successes; the one that stayed is a success.
    settles_at(lambda: aborts(server), before[1] + SLOTS, "llmsim_requests_total{status='499'}")
    settles_at(lambda: successes(server), before[0] + 1, "vllm:request_success_total")


def test_clients_leaving_the_queue_free_their_places(server: Server) -> None:
    queued = 5
    clients = [open_request(server, LONG_TTFT) for _ in range(SLOTS)]
    wait_for_load(server, running=SLOTS, waiting=0, within=5)
    clients += [open_request(server, LONG_TTFT) for _ in range(queued)]
    wait_for_load(server, running=SLOTS, waiting=queued, within=5)
    time.sleep(0.2)
    leave(clients)
    wait_for_load(server, running=0, waiting=0, within=FREED_WITHIN_S)

    # Every slot and every queue place is free again: a full house (2 running, 10 waiting) is
    # admitted, none of it refused with a 429. Each takes 300 ms, so all of them are in at once.
    def ask(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}{CHAT}", json=OK, headers={"x-llmsim-ttft-ms": "300"}, timeout=10)

    with ThreadPoolExecutor(SLOTS + QUEUE) as pool:
        responses = list(pool.map(ask, range(SLOTS + QUEUE)))
    refused = [f"{r.status_code} {r.text}" for r in responses if r.status_code != 200]
    assert not refused, refused


def test_streams_cut_after_the_first_chunk_are_aborts_not_successes(server: Server) -> None:
    before_success, before_aborts, before_reasons = successes(server), aborts(server), abort_reasons(server)
    stream = {**OK, "stream": True}
    # The first chunk leaves at once; the next would take a minute (the longest ITL override).
    headers = {"x-llmsim-itl-ms": "60000", "x-llmsim-output-tokens": "5"}
    with httpx.Client(timeout=5) as client:
        for _ in range(SLOTS):
            with client.stream("POST", f"{server.url}{CHAT}", json=stream, headers=headers) as response:
                assert response.status_code == 200, response.read()
                first = next(response.iter_raw())
                assert first.startswith(b"data: {"), first
            # Leaving the block closes the connection mid-stream.
    wait_for_load(server, running=0, waiting=0, within=FREED_WITHIN_S)
    settles_at(lambda: aborts(server), before_aborts + SLOTS, "llmsim_requests_total{status='499'}")
    assert successes(server) == before_success, "a stream cut short was counted as a success"
    assert abort_reasons(server) == before_reasons + SLOTS, "vLLM's finished_reason=abort"
    response = httpx.post(f"{server.url}{CHAT}", json=OK, timeout=5)
    assert response.status_code == 200
