"""`llmsim probe` against a real nginx in front of a real 3-instance cluster, plus the statistics
on synthetic counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from llmsim_cluster import inventory, routing, state
from llmsim_cluster import probe as probe_cli
from llmsim_cluster.probe_report import verdict_lines
from llmsim_cluster.traffic import Outcome
from tests.nginx import run_nginx, upstream
from tests.servers import free_port, run_server, wait_until

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


# --- the false passes of issue 12 ----------------------------------------------------------


def run_probe(capsys, *args: str) -> tuple[int, dict]:
    """``llmsim probe ... --json`` in this process (no interpreter start-up per run)."""
    code = probe_cli.main([*args, "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, json.loads(captured.out)


def rows_of(report: dict) -> dict[str, dict]:
    return {r["instance"]: r for r in report["instances"]}


@pytest.fixture(scope="module")
def healthy():
    with run_server(["--instance-id", "sim-a"]) as server:
        yield server


@pytest.fixture(scope="module")
def broken():
    with run_server(
        ["--instance-id", "sim-b", "--failure-rate", "1", "--failure-types", "server_error"]
    ) as srv:
        yield srv


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """A working directory with no cluster above it, and no $LLMSIM_RUN_DIR."""
    monkeypatch.delenv("LLMSIM_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_unknown_instance_set_warns_and_strict_fails(capsys, healthy, nowhere) -> None:
    code, report = run_probe(capsys, healthy.url, "-n", "10")
    assert code == 0
    assert not report["instance_set"]["known"]
    assert any("instance set unknown" in w for w in report["warnings"])
    assert any(v["level"] == "warn" and "instance set unknown" in v["check"] for v in report["verdict"])
    code, report = run_probe(capsys, healthy.url, "-n", "10", "--strict")
    assert code == 1 and not report["passed"]


def test_cluster_json_found_upward_from_the_cwd(capsys, healthy, nowhere) -> None:
    run_dir = nowhere / ".llmsim" / "default"
    state.private_dir(run_dir)
    state.save(run_dir, state.Cluster("default", "127.0.0.1", healthy.port, id_prefix="sim-a", size=1))
    deeper = nowhere / "a" / "b"
    deeper.mkdir(parents=True)
    os.chdir(deeper)
    # cluster.json names the instance "sim-a1": the instance answering as "sim-a" is unexpected.
    code, report = run_probe(capsys, healthy.url, "-n", "10")
    assert report["instance_set"]["source"] == f"cluster.json in {run_dir}"
    assert report["instance_set"]["expected"] == ["sim-a1"]
    assert code == 1 and report["distribution"]["unexpected"] == ["sim-a"]
    assert any("does not answer" in w for w in report["warnings"])  # no supervisord there


def test_stopped_instance_is_excluded_and_listed(capsys, cluster, tmp_path) -> None:
    run_dir, ports = cluster
    stop = llmsim("cluster", "stop", "sim-3", "--run-dir", str(run_dir))
    assert stop.returncode == 0, stop.stdout + stop.stderr
    try:
        with run_nginx(tmp_path, upstream(ports[:2])) as url:
            code, report = run_probe(capsys, url, "-n", "60", "--run-dir", str(run_dir))
    finally:
        llmsim("cluster", "start", "sim-3", "--run-dir", str(run_dir))
    assert code == 0, report["verdict"]
    assert report["instance_set"]["stopped"] == {"sim-3": "STOPPED"}
    assert report["instance_set"]["expected"] == ["sim-1", "sim-2"]
    assert set(report["distribution"]["counts"]) == {"sim-1", "sim-2"}
    assert [j["instance"] for j in report["journals"] if j["read"]] == ["sim-1", "sim-2"]


@pytest.mark.parametrize(
    ("fault", "kind", "sample"),
    [("malformed;after=2", "malformed", '"choices":[{"ind'), ("disconnect;after=3", "cut", "after 3 events")],
)
def test_broken_streams_fail_by_kind(capsys, healthy, fault, kind, sample) -> None:
    args = ["--stream", "-n", "8", "--instances", healthy.url, "-H", f"x-llmsim-fault: {fault}"]
    code, report = run_probe(capsys, healthy.url, *args)
    assert code == 1  # a cut stream is a failure, not "could not reach" (2)
    assert report["failures"] == {kind: 8}
    assert sample in report["error_samples"][0]["message"]
    assert rows_of(report)["sim-a"]["errors"] == {kind: 8}


def test_error_bodies_are_shown(capsys, healthy) -> None:
    code, report = run_probe(
        capsys, healthy.url, "-n", "5", "--instances", healthy.url, "-H", "x-llmsim-fault: rate_limit"
    )
    assert code == 1
    [sample] = report["error_samples"]
    assert sample["status"] == 429 and sample["count"] == 5 and sample["from"] == {"sim-a": 5}
    assert "Rate limit reached" in sample["message"]


def test_errors_attributed_through_journals_when_the_gateway_hides_identity(
    capsys, healthy, broken, tmp_path
) -> None:
    hide = "proxy_hide_header x-llmsim-instance;"
    with run_nginx(tmp_path, upstream([healthy.port, broken.port]), extra=hide) as url:
        code, report = run_probe(capsys, url, "-n", "40", "--instances", f"{healthy.url},{broken.url}")
        assert code == 1
        rows = rows_of(report)
        assert "unknown" not in rows and "gateway" not in rows
        assert rows["sim-b"]["errors"] == {"500": 20} and rows["sim-b"]["answers"] == 0
        assert rows["sim-a"]["answers"] == 20 and report["distribution"]["passed"]
        assert report["routing"]["retried"] == 0 and report["routing"]["complete"]
        # By ID only, no journal: the errors carry no identity, as through LiteLLM.
        code, report = run_probe(capsys, url, "-n", "40", "--instances", "sim-a,sim-b")
        assert rows_of(report)["unknown"]["errors"] == {"500": 20}
        assert any("no instance journal" in w for w in report["warnings"])


def test_retries_are_visible_as_attempts_beyond_answers(capsys, healthy, broken, tmp_path) -> None:
    retry = "proxy_next_upstream error timeout http_500 non_idempotent;"
    with run_nginx(tmp_path, upstream([healthy.port, broken.port]), extra=retry) as url:
        code, report = run_probe(capsys, url, "-n", "40", "--instances", f"{healthy.url},{broken.url}")
    rows = rows_of(report)
    assert report["error_rate"] == 0
    # nginx's round-robin also turns for the retries, so sim-b's share of first tries is about half.
    tried_b = rows["sim-b"]["attempts"]
    assert 10 <= tried_b <= 30 and rows["sim-b"]["answers"] == 0
    assert rows["sim-a"]["attempts"] == 40 and rows["sim-a"]["answers"] == 40
    assert report["routing"]["retried"] == tried_b and report["routing"]["failovers"] == tried_b
    assert report["routing"]["attempts"] == 40 + tried_b
    assert code == 1  # sim-b delivered nothing: the spread is not uniform
    assert any(f"sim-b (tried {tried_b}×, answered none)" in v["check"] for v in report["verdict"])


def test_error_made_by_the_gateway_itself(capsys, healthy, tmp_path) -> None:
    with run_nginx(tmp_path, upstream([free_port()])) as url:  # nobody listens there: nginx answers 502
        code, report = run_probe(capsys, url, "-n", "6", "--instances", healthy.url)
    assert code == 1
    assert rows_of(report)["gateway"]["errors"] == {"502": 6}
    assert report["routing"]["gateway_errors"] == 6
    assert report["error_samples"][0]["from"] == {"gateway": 6}


def test_unreadable_journals_are_reported(capsys, nowhere) -> None:
    with (
        run_server(["--instance-id", "small", "--journal-size", "5"]) as small,
        run_server(["--instance-id", "closed", "--control-access", "off"]) as closed,
    ):
        _, report = run_probe(capsys, small.url, "-n", "12", "--instances", small.url)
        assert any("ring overflowed" in w for w in report["warnings"])
        code, report = run_probe(capsys, closed.url, "-n", "3", "--instances", closed.url, "--strict")
        assert code == 1
        assert any("control API refused (403" in w for w in report["warnings"])


def test_expect_names_some_instances_the_others_keep_weight_1() -> None:
    inv = inventory.Inventory([inventory.Member(f"sim-{k}", None) for k in (1, 2, 3, 4)], "--instances")
    counts = {"sim-1": 300, "sim-2": 100, "sim-3": 100, "sim-4": 100}
    outcomes = [Outcome(f"t{i}-{name}", 200, name, 0.01, 0.0) for name, n in counts.items() for i in range(n)]
    result = probe_cli.evaluate(
        "http://gw",
        outcomes,
        weights={"sim-1": 3.0},
        check_distribution=True,
        inv=inv,
        alpha=0.01,
        max_error_rate=0.0,
        stream=False,
        elapsed=1.0,
    )
    assert result.distribution.passed and not result.distribution.unexpected
    text = next(t for level, t in verdict_lines(result) if t.startswith("distribution"))
    assert "weights sim-1=3, sim-2=1, sim-3=1, sim-4=1" in text and "uniform" not in text


def test_retried_request_told_attempt_by_attempt(capsys, healthy, broken, tmp_path) -> None:
    retry = "proxy_next_upstream error timeout http_500 non_idempotent;"
    with run_nginx(tmp_path, upstream([broken.port, healthy.port]), extra=retry) as url:
        _, report = run_probe(capsys, url, "-n", "4", "-c", "1", "--instances", f"{healthy.url},{broken.url}")
    [first, *_] = report["traces"]
    assert [(a["instance"], a["status"]) for a in first["attempts"]] == [("sim-b", 500), ("sim-a", 200)]
    assert (
        first["answered_by"] == "sim-a"
        and first["attempts"][0]["after_ms"] <= first["attempts"][1]["after_ms"]
    )
