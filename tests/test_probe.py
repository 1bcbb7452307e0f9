"""`llmsim probe` against a real nginx in front of a real 3-instance cluster, plus the statistics
on synthetic counts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cluster import routing
from tests.nginx import run_nginx, upstream
from tests.servers import free_port, wait_until

IDS = ["sim-1", "sim-2", "sim-3"]


# --- statistics on synthetic counts -------------------------------------------------------


def test_uniform_counts_pass() -> None:
    dist = routing.distribution({"a": 101, "b": 97, "c": 102}, alpha=0.01, instances=["a", "b", "c"])
    assert dist.passed and dist.p_value > 0.5


def test_skewed_counts_fail() -> None:
    dist = routing.distribution({"a": 180, "b": 60, "c": 60}, alpha=0.01, instances=["a", "b", "c"])
    assert not dist.passed and dist.p_value < 1e-6


def test_weights() -> None:
    weights = routing.parse_expect("a=3,b=1")
    assert weights == {"a": 3.0, "b": 1.0}
    assert routing.distribution({"a": 151, "b": 49}, 0.01, weights).passed
    assert not routing.distribution({"a": 100, "b": 100}, 0.01, weights).passed
    assert routing.parse_expect("uniform") is None
    with pytest.raises(ValueError):
        routing.parse_expect("a=3,b")


def test_instance_that_got_nothing_is_reported() -> None:
    dist = routing.distribution({"a": 100, "b": 100}, 0.01, instances=["a", "b", "c"])
    assert dist.starved == ["c"] and dist.counts["c"] == 0 and not dist.passed
    by_count = routing.distribution({"a": 100, "b": 100}, 0.01, instances=3)
    assert by_count.unnamed_slots == 1 and not by_count.passed
    assert routing.distribution({"a": 100, "b": 98, "c": 104}, 0.01, instances=3).passed
    stale = routing.distribution({"a": 100, "b": 100, "c": 100}, 0.01, instances=2)
    assert stale.extra == 1 and not stale.passed


def test_unexpected_instance_fails() -> None:
    dist = routing.distribution({"a": 100, "b": 100, "zz": 3}, 0.01, instances=["a", "b"])
    assert dist.unexpected == ["zz"] and not dist.passed


def test_affinity() -> None:
    sticky = routing.affinity([("s1", "a"), ("s1", "a"), ("s2", "b"), ("s2", "b")])
    assert sticky.passed and not sticky.violations
    loose = routing.affinity([("s1", "a"), ("s1", "b"), ("s2", "b")])
    assert not loose.passed and list(loose.violations) == ["s1"]


# --- a real cluster behind a real nginx ----------------------------------------------------


def llmsim(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("probe-cluster")
    base = free_port(3)
    up = llmsim("cluster", "up", "-n", "3", "--base-port", str(base), "--run-dir", str(run_dir))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield run_dir, [base, base + 1, base + 2]
    finally:
        llmsim("cluster", "down", "--run-dir", str(run_dir))


def probe(url: str, *args: str, run_dir: Path | None = None) -> tuple[int, dict]:
    extra = ["--run-dir", str(run_dir)] if run_dir else []
    result = llmsim("probe", url, "--json", *extra, *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_round_robin_passes_uniform(cluster, tmp_path) -> None:
    run_dir, ports = cluster
    with run_nginx(tmp_path, upstream(ports)) as url:
        code, report = probe(url, "--requests", "300", run_dir=run_dir)
    assert code == 0, report["verdict"]
    assert set(report["distribution"]["counts"]) == set(IDS)
    assert report["distribution"]["p_value"] >= 0.01
    assert report["error_rate"] == 0


def test_weighted_upstream(cluster, tmp_path) -> None:
    run_dir, ports = cluster
    with run_nginx(tmp_path, upstream(ports, weights={ports[0]: 3})) as url:
        code, report = probe(url, "--requests", "500", "--expect", "sim-1=3,sim-2=1,sim-3=1", run_dir=run_dir)
        assert code == 0, report["verdict"]
        counts = report["distribution"]["counts"]
        assert counts["sim-1"] > 2 * counts["sim-2"]
        code, report = probe(url, "--requests", "500", "--expect", "uniform", run_dir=run_dir)
        assert code == 1
        assert not report["distribution"]["passed"]


def test_session_affinity(cluster, tmp_path) -> None:
    run_dir, ports = cluster
    # 10 sessions over 3 upstreams: round-robin cannot keep them sticky by accident, as it
    # would with a session count that is a multiple of 3.
    sticky = ["--sticky-header", "x-session-id", "--sessions", "10", "--requests", "240"]
    with run_nginx(tmp_path, upstream(ports, policy="hash $http_x_session_id consistent")) as url:
        code, report = probe(url, *sticky, run_dir=run_dir)
    assert code == 0, report["verdict"]
    assert report["affinity"]["passed"] and len(report["affinity"]["sessions"]) == 10
    assert report["distribution"] is None  # affinity replaces the uniformity check
    with run_nginx(tmp_path, upstream(ports)) as url:
        code, report = probe(url, *sticky, run_dir=run_dir)
    assert code == 1
    assert report["affinity"]["violations"]


def test_stream_through_nginx_reads_ids_from_chunks(cluster, tmp_path) -> None:
    run_dir, ports = cluster
    # Hide the header so the only place left to read the instance from is the chunks.
    with run_nginx(tmp_path, upstream(ports), extra="proxy_hide_header x-llmsim-instance;") as url:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as response:
            assert "x-llmsim-instance" not in response.headers
            assert any(line.startswith("data: [DONE]") for line in response.iter_lines())
        code, report = probe(url, "--stream", "--requests", "150", run_dir=run_dir)
    assert code == 0, report["verdict"]
    rows = {r["instance"]: r for r in report["instances"]}
    assert set(rows) == set(IDS)
    assert all(rows[i]["ttft_ms"]["p50"] is not None for i in IDS)


def test_instance_stopped_mid_way_shows_as_shift_or_errors(cluster, tmp_path) -> None:
    run_dir, ports = cluster
    with run_nginx(tmp_path, upstream(ports)) as url:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmsim",
                "probe",
                url,
                "--json",
                "--run-dir",
                str(run_dir),
                "--requests",
                "1200",
                "--concurrency",
                "2",
                # 5 ms of simulated latency a request keeps the probe running for seconds, long
                # enough for the stop to land in the middle of it.
                "--header",
                "x-llmsim-ttft-ms: 5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stats = f"http://127.0.0.1:{ports[1]}/llmsim/stats"
            before = httpx.get(stats).json()["requests"].get("/v1/chat/completions", {}).get("200", 0)
            wait_until(
                lambda: (
                    httpx.get(stats).json()["requests"].get("/v1/chat/completions", {}).get("200", 0)
                    >= before + 50
                ),
                what="sim-2 to serve probe traffic",
            )
            stop = llmsim("cluster", "stop", "sim-2", "--run-dir", str(run_dir))
            assert stop.returncode == 0, stop.stdout + stop.stderr
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
            llmsim("cluster", "start", "sim-2", "--run-dir", str(run_dir))
    assert process.returncode == 1, err
    report = json.loads(out)
    counts = Counter({r["instance"]: r["requests"] for r in report["instances"]})
    errors = sum(sum(r["errors"].values()) for r in report["instances"])
    shifted = counts["sim-2"] < 0.8 * min(counts["sim-1"], counts["sim-3"])
    assert shifted or errors > 0, report
    assert not report["passed"]


def test_unreachable_url_exits_2() -> None:
    result = llmsim("probe", f"http://127.0.0.1:{free_port()}", "--requests", "5")
    assert result.returncode == 2
    assert "could not reach" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2() -> None:
    result = llmsim("probe", "http://127.0.0.1:1", "--expect", "sim-1=x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
