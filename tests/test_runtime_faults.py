"""Fault settings changed at runtime reach every fault, also those a request picks by header, and a
new fault seed restarts the draw (issue 13's fixes, against a real server)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Server, run_server

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def sim() -> Iterator[Server]:
    with run_server(["--instance-id", "sim-rt"]) as server:
        yield server


def patch(server: Server, body: dict) -> None:
    response = httpx.patch(f"{server.url}/llmsim/config", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def chat(server: Server, headers: dict | None = None, **body) -> httpx.Response:
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three four"}], **body}
    return httpx.post(f"{server.url}/v1/chat/completions", json=payload, headers=headers, timeout=TIMEOUT)


def journaled(server: Server, trace: str) -> dict:
    (entry,) = httpx.get(f"{server.url}/llmsim/requests", params={"trace": trace}, timeout=TIMEOUT).json()[
        "entries"
    ]
    return entry


def test_fault_after_reaches_a_header_fault(sim: Server) -> None:
    patch(sim, {"fault_after": 6, "response_mode": "lorem"})
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            headers = {
                "x-llmsim-fault": "disconnect",
                "x-llmsim-trace": "rt-after",
                "x-llmsim-output-tokens": "30",
            }
            chat(sim, headers, stream=True)
        assert journaled(sim, "rt-after")["events"] == 6  # the default would cut after 3
    finally:
        patch(sim, {"fault_after": 3, "response_mode": "echo"})


def test_timeout_hang_reaches_a_header_fault(sim: Server) -> None:
    patch(sim, {"timeout_hang": 0.2})
    try:
        started = time.monotonic()
        response = chat(sim, {"x-llmsim-fault": "timeout"})
        assert response.status_code == 504 and time.monotonic() - started < 5
    finally:
        patch(sim, {"timeout_hang": 600})


def test_slow_factor_reaches_a_header_fault(sim: Server) -> None:
    patch(sim, {"slow_factor": 2, "prefill_overhead": 50})
    try:
        assert chat(sim, {"x-llmsim-fault": "slow", "x-llmsim-trace": "rt-slow"}).status_code == 200
        assert journaled(sim, "rt-slow")["plan"]["ttft_ms"] == pytest.approx(100, abs=1)
    finally:
        patch(sim, {"slow_factor": 10, "prefill_overhead": 0})


def test_a_new_fault_seed_restarts_the_draw(sim: Server) -> None:
    def draw() -> list[int]:
        return [chat(sim).status_code for _ in range(24)]

    patch(sim, {"failure_rate": 0.5, "fault_seed": 7})
    try:
        first = draw()
        patch(sim, {"fault_seed": 8})
        other = draw()
        patch(sim, {"fault_seed": 7})
        again = draw()
    finally:
        patch(sim, {"failure_rate": 0, "fault_seed": None})
    assert first == again and first != other
    assert set(first) == {200, 500}
