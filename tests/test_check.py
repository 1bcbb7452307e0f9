"""`llmsim check` against real gateways (nginx, haproxy) in front of real instances: known
configurations get known verdicts, and every instance is restored afterwards (issue 12)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from llmsim_cluster import check
from llmsim_cluster.inventory import Inventory, Member
from llmsim_cluster.scenarios import FAIL, PASS, WARN, Score
from llmsim_cluster.testbed import Testbed
from tests import haproxy, nginx
from tests.servers import Server, free_port, run_server

pytestmark = pytest.mark.gateways  # make test-gateways

IDS = ("sim-1", "sim-2", "sim-3")


@pytest.fixture(scope="module")
def sims() -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(run_server(["--instance-id", name])) for name in IDS]


def run_check(capsys, url: str, sims: list[Server], scenario: str, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    instances = ",".join(s.url for s in sims)
    argv = [url, "--instances", instances, "--scenarios", scenario, "-n", "12", "--heal-wait", "1", "--json"]
    code = check.main([*argv, *extra])
    out = json.loads(capsys.readouterr().out)
    (score,) = out["scores"]
    return code, score


def assert_restored(sims: list[Server]) -> None:
    for sim in sims:
        config = httpx.get(f"{sim.url}/llmsim/config", timeout=5).json()
        assert config["failure_rate"] == 0 and config["prefill_overhead"] == 0, sim.url


@pytest.mark.parametrize("retries", [True, False], ids=["retries", "no-retries"])
def test_nginx_failover_5xx(capsys, tmp_path: Path, sims: list[Server], retries: bool) -> None:
    with nginx.run_recipe(tmp_path, [s.port for s in sims], retries=retries) as url:
        code, score = run_check(capsys, url, sims, "failover-5xx")
    figures = score["figures"]
    target = figures["per_instance"]["sim-1"]
    assert target["attempts"] >= 1 and target["answers"] == 0  # the broken one answered nothing
    if retries:
        assert (score["verdict"], code) == (PASS, 0), score
        assert figures["client_errors"] == 0 and figures["failed_over"] >= 1
        assert figures["attempts"] > figures["requests"]  # retries show as attempts beyond answers
    else:
        assert (score["verdict"], code) == (FAIL, 1), score
        assert figures["attempts"] == figures["requests"] and figures["failed_over"] == 0
        assert target["blamed"] == figures["client_errors"] == target["attempts"]
        assert any("500" in sample for sample in score["samples"])
    assert_restored(sims)


@pytest.mark.parametrize("retries", [True, False], ids=["retry-on", "no-retry-on"])
def test_haproxy_failover_5xx(capsys, tmp_path: Path, sims: list[Server], retries: bool) -> None:
    with haproxy.run_haproxy(tmp_path, [s.port for s in sims], retries=retries) as url:
        code, score = run_check(capsys, url, sims, "failover-5xx")
    figures = score["figures"]
    if retries:
        assert score["verdict"] == PASS and figures["client_errors"] == 0, score
        assert figures["attempts"] > figures["requests"] and figures["failed_over"] >= 1
    else:
        assert score["verdict"] == FAIL and figures["client_errors"] > 0, score
        assert figures["attempts"] == figures["requests"]
    assert_restored(sims)


class _Swallowing(BaseHTTPRequestHandler):
    """A naive buffering proxy, the kind that truncates silently: it reads each upstream answer
    whole, swallows a broken transfer, and sends what it got as a complete 200."""

    upstreams: itertools.cycle

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        forwarded = {k: v for k, v in self.headers.items() if k.lower().startswith(("x-", "content-type"))}
        data = b""
        try:
            with httpx.stream("POST", next(self.upstreams), content=body, headers=forwarded, timeout=10) as r:
                for chunk in r.iter_raw():
                    data += chunk
        except httpx.HTTPError:
            pass  # the bug this gateway stands for
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def swallowing_gateway(sims: list[Server]) -> Iterator[str]:
    handler = type(
        "Handler",
        (_Swallowing,),
        {"upstreams": itertools.cycle(f"{s.url}/v1/chat/completions" for s in sims)},
    )
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_stream_cut_visible_or_silent(capsys, tmp_path: Path, sims: list[Server]) -> None:
    """nginx sees the upstream's cut (uvicorn streams chunked) and breaks the client's stream too:
    visible. A buffering proxy that swallows the broken transfer hands the client a clean 200 that
    just stops: a silent truncation, the worst outcome."""
    with nginx.run_recipe(tmp_path, [s.port for s in sims]) as url:
        code, visible = run_check(capsys, url, sims, "stream-cut")
    assert (visible["verdict"], code) == (WARN, 0), visible
    assert visible["figures"]["client_failures"].get("cut") == visible["figures"]["attempts_on_target"]
    with swallowing_gateway(sims) as url:
        code, silent = run_check(capsys, url, sims, "stream-cut")
    assert (silent["verdict"], code) == (FAIL, 1), silent
    assert silent["figures"]["client_failures"].get("truncated") and "silent" in silent["summary"]
    assert_restored(sims)


def test_retry_after_ignored_and_passed_through(capsys, tmp_path: Path, sims: list[Server]) -> None:
    """nginx does not retry a 429: the client gets it, and nothing waits for Retry-After."""
    with nginx.run_recipe(tmp_path, [s.port for s in sims]) as url:
        code, score = run_check(capsys, url, sims, "rate-limit", "--retry-after", "1")
    figures = score["figures"]
    assert (score["verdict"], code) == (FAIL, 1), score
    assert figures["passed_to_client"] >= 1 and figures["retry_after_s"] == 1
    assert_restored(sims)


def test_usage_headers_and_distribution(capsys, tmp_path: Path, sims: list[Server]) -> None:
    with nginx.run_recipe(tmp_path, [s.port for s in sims]) as url:
        for scenario in ("usage", "distribution"):
            code, score = run_check(capsys, url, sims, scenario)
            assert (score["verdict"], code) == (PASS, 0), score
        _, seen = run_check(capsys, url, sims, "headers", "--api-key", "sk-client-key-0123456789")
    assert "x-llmsim-check" in seen["figures"]["arrived"]
    # nginx passes the client's key on: flagged, since a gateway usually holds its own.
    assert seen["figures"]["client_key_reached_instance"] is True and seen["verdict"] == WARN


def test_an_instance_is_restored_when_the_scenario_breaks(sims: list[Server]) -> None:
    bed = Testbed(sims[0].url + "/v1/chat/completions", Inventory([Member("sim-1", sims[0].url)], "test"))

    async def interrupted() -> None:
        async with bed.broken(bed.members[0], {"failure_rate": 1.0, "retry_after": 9.0}):
            assert httpx.get(f"{sims[0].url}/llmsim/config", timeout=5).json()["failure_rate"] == 1.0
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(interrupted())
    config = httpx.get(f"{sims[0].url}/llmsim/config", timeout=5).json()
    assert config["failure_rate"] == 0 and config["retry_after"] == 1.0


def test_unknown_gateway_or_instances_is_a_usage_error(capsys, sims: list[Server]) -> None:
    assert check.main(["http://127.0.0.1:1", "--instances", sims[0].url, "--scenarios", "usage"]) == 2
    assert check.main([sims[0].url, "--scenarios", "nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err


def test_junit_and_exit_codes() -> None:
    scores = [
        Score("failover-5xx", FAIL, "sim-1 answered 500", {"seconds": 1.5}, ["500 boom"]),
        Score("usage", PASS, "equal", {"seconds": 0.5}),
        Score("affinity", "skip", "no header"),
        Score("headers", WARN, "key forwarded"),
    ]
    suite = ElementTree.fromstring(check.junit(scores, "http://gw"))
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failed = suite.find("testcase[@name='failover-5xx']/failure")
    assert failed is not None and failed.get("message") == "sim-1 answered 500" and failed.text == "500 boom"
    assert check.exit_code(scores, strict=False, known=True) == 1
    assert check.exit_code(scores[1:], strict=False, known=True) == 0
    assert check.exit_code(scores[1:], strict=True, known=True) == 1  # the warning
    assert check.exit_code(scores[1:2], strict=True, known=False) == 1  # the unknown instance set
