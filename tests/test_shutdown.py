"""SIGTERM: an instance finishes what fits in its graceful-shutdown timeout, then exits, whatever
is still in flight (a request whose client left, a client still waiting for a first token that
would take ten minutes)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from llmsim.settings import Settings
from tests.servers import Server, open_request, run_server

TIMEOUT_S = 2  # --shutdown-timeout of these instances
MARGIN_S = 2.0  # process exit and interpreter teardown after the timeout
DEFAULT_TIMEOUT_S = 5  # without the flag
LONG_TTFT = {"x-llmsim-ttft-ms": "600000"}
OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
CHAT = "/v1/chat/completions"


def wait_running(server: Server, running: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while httpx.get(f"{server.url}/health", timeout=1).json()["running"] != running:
        assert time.monotonic() < deadline, f"never saw {running} requests running"
        time.sleep(0.01)


def exits_within(process: subprocess.Popen, seconds: float) -> float:
    """SIGTERM the process; the seconds it took to exit (killed, and the test failed, past ``seconds``)."""
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running {seconds}s after SIGTERM")
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "env", "limit"),
    [
        (["--shutdown-timeout", str(TIMEOUT_S)], None, TIMEOUT_S),
        ([], None, DEFAULT_TIMEOUT_S),
    ],
    ids=["flag", "default"],
)
def test_sigterm_exits_within_the_timeout_whatever_is_in_flight(
    args: list[str], env: dict[str, str] | None, limit: float
) -> None:
    with run_server(["--instance-id", "sim-shutdown", *args], env=env) as server:
        abandoned = open_request(server, LONG_TTFT)
        waiting = open_request(server, LONG_TTFT)
        wait_running(server, 2)
        abandoned.close()  # this client left; the other one is still connected, waiting
        try:
            took = exits_within(server.process, limit + MARGIN_S)
        finally:
            waiting.close()
        assert took <= limit + MARGIN_S


def test_the_environment_sets_the_same_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMSIM_SHUTDOWN_TIMEOUT lands in the one Settings object the flag does (the SIGTERM path
    above reads only that), so the environment needs no server of its own."""
    monkeypatch.delenv("LLMSIM_SHUTDOWN_TIMEOUT", raising=False)
    assert Settings().shutdown_timeout == DEFAULT_TIMEOUT_S
    monkeypatch.setenv("LLMSIM_SHUTDOWN_TIMEOUT", str(TIMEOUT_S))
    assert Settings().shutdown_timeout == TIMEOUT_S


def test_a_stream_in_flight_at_sigterm_is_finished() -> None:
    tokens = 20
    headers = {"x-llmsim-itl-ms": "50", "x-llmsim-output-tokens": str(tokens)}  # about a second
    body = {**OK, "stream": True}
    with run_server(["--instance-id", "sim-shutdown", "--shutdown-timeout", str(TIMEOUT_S)]) as server:
        first = threading.Event()
        lines: list[str] = []
        failure: list[BaseException] = []

        def read_stream() -> None:
            try:
                with (
                    httpx.Client(timeout=10) as client,
                    client.stream("POST", f"{server.url}{CHAT}", json=body, headers=headers) as response,
                ):
                    assert response.status_code == 200
                    for line in response.iter_lines():
                        if line:
                            lines.append(line)
                            first.set()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failure.append(exc)
            finally:
                first.set()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert first.wait(5), "the stream never started"
        at_sigterm = len(lines)
        took = exits_within(server.process, TIMEOUT_S + MARGIN_S)
        reader.join(5)
        assert not failure, f"the stream broke off: {failure[0]!r} after {len(lines)} events"
        assert lines[-1] == "data: [DONE]", lines[-3:]
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert at_sigterm < tokens, "the stream was over before SIGTERM: nothing was tested"
        assert len(pieces) == tokens, f"{len(pieces)} content chunks of {tokens}"
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length"), chunks[-1]
        assert took <= TIMEOUT_S + MARGIN_S
