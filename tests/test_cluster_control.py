"""`llmsim cluster fault|latency` and the status columns they show, against a real 3-instance cluster."""

from __future__ import annotations

import contextlib
import json
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from llmsim.settings import Settings
from llmsim_cluster import ClusterError, control, serve, state, status, supervisor
from llmsim_cluster.cli import CLEAR_FAULTS, CLEAR_LATENCY
from llmsim_cluster.state import Cluster
from tests.servers import free_port
from tests.test_cluster import CHAT, Cli, make_cli, url

IDS = ["sim-1", "sim-2", "sim-3"]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, int]]:
    cli = make_cli(tmp_path_factory.mktemp("control"))
    base = free_port(3)
    try:
        cli("up", "-n", 3, "--base-port", base)
        yield cli, base
    finally:
        cli.teardown()


@pytest.fixture
def cluster3(three: tuple[Cli, int]) -> Iterator[tuple[Cli, dict[str, int]]]:
    """The shared cluster, with every fault and latency cleared afterwards, whatever the test did."""
    cli, base = three
    ports = dict(zip(IDS, range(base, base + 3), strict=True))
    try:
        yield cli, ports
    finally:
        # What `fault all --clear` and `latency all --clear` send (the tests of those commands run
        # them), sent directly: two CLI processes after every test cost a second.
        for port in ports.values():
            with contextlib.suppress(httpx.HTTPError):  # a test stopped it
                httpx.patch(f"{url(port)}/llmsim/config", json={**CLEAR_FAULTS, **CLEAR_LATENCY}, timeout=10)


def chat(port: int, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url(port)}/v1/chat/completions", json=CHAT, headers=headers, timeout=10)


def ttft(port: int) -> float:
    """Seconds from sending a streamed chat completion to its first data event."""
    started = time.perf_counter()
    body = {**CHAT, "stream": True}
    with httpx.stream("POST", f"{url(port)}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                return time.perf_counter() - started
    raise AssertionError("the stream carried no data event")


def table(cli: Cli, width: int = 120) -> dict[str, str]:
    """The rendered status table at ``width`` columns: each instance's row (and its wrapped lines)."""
    cluster = state.load(cli.run_dir)
    assert cluster is not None
    rows = status.collect(cluster, supervisor.connect(cli.run_dir).getAllProcessInfo())
    out = StringIO()
    Console(file=out, width=width).print(status.render(cluster, rows))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    found: dict[str, str] = {}
    for k, line in enumerate(lines):
        words = line.split()
        if words and words[0] in IDS:
            following = [x for x in lines[k + 1 :] if x.strip() and x.split()[0] not in IDS]
            found[words[0]] = " ".join([line, *following[:1]])  # a wrapped cell continues below
    return found


def test_fault_on_one_instance_only(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, port = cluster3
    done = cli("fault", "sim-2", "--type", "server_error", "--rate", "1.0")
    assert done.stdout.strip() == f"sim-2 {url(port['sim-2'])} faults: server_error 100%"

    failed = chat(port["sim-2"])
    assert failed.status_code == 500
    assert failed.headers["x-llmsim-instance"] == "sim-2"
    error = failed.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "server_error"
    for other in ("sim-1", "sim-3"):
        assert chat(port[other]).status_code == 200

    rows = cli.status()
    assert rows["sim-2"]["faults"]["failure_rate"] == 1.0
    assert rows["sim-2"]["faults"]["failure_types"] == ["server_error"]
    assert rows["sim-2"]["faults"]["faults"]["server_error"] >= 1
    for other in ("sim-1", "sim-3"):
        assert (
            rows[other]["faults"]["failure_rate"] == 0 and rows[other]["faults"]["fail_first_remaining"] == 0
        )
    rendered = table(cli)
    assert "server_error 100%" in rendered["sim-2"]
    assert "server_error" not in rendered["sim-1"] and "server_error" not in rendered["sim-3"]
    assert "sim-2" in cli("status").stdout and "server_error 100%" in cli("status").stdout

    # The probe, pointed at sim-2 alone, sees every request fail and says so.
    probe = subprocess.run(
        [sys.executable, "-m", "llmsim", "probe", url(port["sim-2"]), "--instances", "sim-2", "--json"]
        + ["--requests", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 1, probe.stderr
    report = json.loads(probe.stdout)
    assert not report["passed"] and report["requests"] == 20 and report["error_rate"] == 1.0
    (row,) = [r for r in report["instances"] if r["instance"] == "sim-2"]
    assert row["errors"] == {"500": 20}

    cleared = cli("fault", "sim-2", "--clear")
    assert cleared.stdout.strip() == f"sim-2 {url(port['sim-2'])} faults: -"
    assert all(chat(port[i]).status_code == 200 for i in IDS)
    assert cli.status()["sim-2"]["faults"]["failure_rate"] == 0
    assert "server_error" not in table(cli)["sim-2"]


def test_fail_first_restarts_each_time(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, port = cluster3
    for _ in range(2):  # the same N twice: the instance must count again from N
        done = cli("fault", "sim-1", "--fail-first", 2)
        assert done.stdout.strip() == f"sim-1 {url(port['sim-1'])} faults: server_error first 2"
        assert "server_error first 2" in table(cli)["sim-1"]
        assert [chat(port["sim-1"]).status_code for _ in range(3)] == [500, 500, 200]
        assert cli.status()["sim-1"]["faults"]["fail_first_remaining"] == 0


def test_fault_all_changes_every_instance(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, port = cluster3
    done = cli("fault", "all", "--types", "rate_limit,overloaded", "--rate", "0.5")
    assert done.stdout.splitlines() == [f"{i} {url(port[i])} faults: rate_limit,overloaded 50%" for i in IDS]
    rows = cli.status()
    assert all(rows[i]["faults"]["failure_types"] == ["rate_limit", "overloaded"] for i in IDS)
    rendered = table(cli)
    assert all("rate_limit,overloaded" in rendered[i] and "50%" in rendered[i] for i in IDS)


def test_latency_on_one_instance_only(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, port = cluster3
    done = cli("latency", "sim-1", "--ttft-ms", 300)
    assert done.stdout.strip() == f"sim-1 {url(port['sim-1'])} latency: ttft 300ms"
    assert ttft(port["sim-1"]) >= 0.3
    assert ttft(port["sim-3"]) < 0.3
    row = cli.status()["sim-1"]["latency"]
    assert row == {"profile": None, "prefill_overhead_ms": 300.0, "itl_ms": 0.0}
    rendered = table(cli)
    assert "ttft 300ms" in rendered["sim-1"] and "ttft" not in rendered["sim-3"]

    cli("latency", "sim-1", "--ttft-ms", 300, "--itl-ms", 20)
    assert "ttft 300ms itl 20ms" in table(cli)["sim-1"]
    cli("latency", "sim-3", "--profile", "gpt-4o-mini")
    assert "profile gpt-4o-mini" in table(cli)["sim-3"]

    cleared = cli("latency", "all", "--clear")
    assert cleared.stdout.splitlines() == [f"{i} {url(port[i])} latency: -" for i in IDS]
    assert ttft(port["sim-1"]) < 0.3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["fault", "sim-9", "--type", "server_error"],
            "unknown instance 'sim-9'; this cluster has sim-1, sim-2, sim-3",
        ),
        (["latency", "sim-9", "--ttft-ms", "10"], "unknown instance 'sim-9'"),
        (["fault", "sim-1", "--type", "bogus"], "sim-1 (http://127.0.0.1:"),  # the instance's 400
        (["fault", "sim-1", "--rate", "2"], "rejected the change: Invalid value for 'failure_rate'"),
        (["latency", "sim-1", "--profile", "nope"], "unknown latency profile 'nope'"),
        (["fault", "sim-1"], "say which fault"),
        (["fault", "sim-1", "--clear", "--rate", "1"], "--clear takes no other fault flags"),
        (["latency", "sim-1", "--profile", "gpt-4o", "--ttft-ms", "5"], "--profile replaces"),
    ],
)
def test_mistakes_are_one_clear_error(
    cluster3: tuple[Cli, dict[str, int]], args: list[str], message: str
) -> None:
    cli, _ = cluster3
    done = cli(*args, ok=False)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_bad_fault_type_names_the_known_ones(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, _ = cluster3
    done = cli("fault", "all", "--type", "bogus", ok=False)
    assert done.returncode == 1 and "unknown fault type 'bogus'" in done.stderr
    assert "server_error" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # a 400 stops at the first instance
    assert all(row["faults"]["failure_rate"] == 0 for row in cli.status().values())


def test_a_stopped_instance_is_reported_and_the_others_change(cluster3: tuple[Cli, dict[str, int]]) -> None:
    cli, port = cluster3
    cli("stop", "sim-3")
    try:
        done = cli("fault", "all", "--type", "bad_gateway", ok=False)
        assert done.returncode == 1
        assert done.stdout.splitlines() == [f"{i} {url(port[i])} faults: bad_gateway 100%" for i in IDS[:2]]
        assert f"sim-3 ({url(port['sim-3'])}) refuses connections" in done.stderr
        assert "Traceback" not in done.stderr
        assert chat(port["sim-1"]).status_code == 502
        assert "bad_gateway 100%" in table(cli)["sim-2"]
    finally:
        cli("start", "sim-3")


def test_secrets_stay_out_of_files_and_command_lines(tmp_path: Path) -> None:
    """A token from `up`'s environment and API keys given as serve flags: the instances get both,
    the CLI finds the token, and neither is in a run-dir file (all 0600), a command line or status."""
    cli = make_cli(tmp_path)
    base = free_port()
    token, key = f"admin-{secrets.token_hex(8)}", f"sk-{secrets.token_hex(8)}"
    try:
        cli("up", "-n", 1, "--base-port", base, "--", "--api-keys", key, env={control.TOKEN_ENV: token})
        # The instance really demands both...
        refused = httpx.patch(f"{url(base)}/llmsim/config", json={"failure_rate": 1.0}, timeout=5)
        assert refused.status_code == 401
        assert chat(base).status_code == 401
        assert chat(base, key).status_code == 200
        # ...and the CLI, with neither in its own environment, sends the token the instances run with.
        done = cli("fault", "sim-1", "--fail-first", 1)
        assert done.stdout.strip().endswith("faults: server_error first 1")
        row = cli.status()["sim-1"]
        assert row["stats_error"] is None and row["faults"]["fail_first_remaining"] == 1
        assert chat(base, key).status_code == 500
        assert "latency: ttft 50ms" in cli("latency", "sim-1", "--ttft-ms", 50).stdout

        pids = [supervisor.daemon(cli.run_dir), *supervisor.members(cli.run_dir)]
        seen = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in pids if pid]
        seen += [cli("status").stdout, cli("status", "--json").stdout]
        assert stat.S_IMODE(cli.run_dir.stat().st_mode) == 0o700
        for path in cli.run_dir.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
            if path.is_file():
                seen.append(path.read_text(errors="replace"))
        assert len(seen) >= 8  # cmdlines, outputs, cluster.json, supervisord.conf, pidfile, logs
        assert not [text for text in seen if token in text or key in text]
    finally:
        cli.teardown()


def test_secret_flags_are_lifted_into_the_environment() -> None:
    args = ["--admin-token", "t1", "--output-tokens", "5", "--api-keys=k1,k2", "--api-keys-file", "keys.txt"]
    rest, env = serve.lift_secrets(args)
    assert rest == ["--output-tokens", "5", "--api-keys-file", "keys.txt"]
    assert env == {control.TOKEN_ENV: "t1", "LLMSIM_API_KEYS": "k1,k2"}
    assert serve.lift_secrets(["--api-k", "x"]) == (["--api-k", "x"], {})  # ambiguous: serve refuses it
    with pytest.raises(ClusterError, match="--admin-token after -- needs a value"):
        serve.lift_secrets(["--admin-token"])
    assert {serve.ADMIN_TOKEN, serve.ADMIN_TOKEN_FILE} <= set(Settings.model_fields)


def test_admin_token_without_a_running_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(control.TOKEN_ENV, "env")
    assert control.admin_token(tmp_path, None) == "env"
    (tmp_path / "token.txt").write_text("from-file\n")
    described = Cluster(
        "c", "127.0.0.1", 8001, serve_args=["--admin-token-file", "token.txt"], workdir=str(tmp_path)
    )
    assert control.admin_token(tmp_path / "run", described) == "from-file"
    monkeypatch.setenv(control.TOKEN_ENV, "")
    assert control.admin_token(tmp_path, None) is None
    # In the --config file, as the server reads it: the token itself, or its file.
    (tmp_path / "llmsim.yaml").write_text("admin_token: from-config\n")
    configured = Cluster(
        "c", "127.0.0.1", 8001, serve_args=["--config", "llmsim.yaml"], workdir=str(tmp_path)
    )
    assert control.admin_token(tmp_path / "run", configured) == "from-config"
    (tmp_path / "llmsim.toml").write_text('admin_token_file = "token.txt"\n')
    configured.serve_args = ["--config=llmsim.toml"]
    assert control.admin_token(tmp_path / "run", configured) == "from-file"


def test_descriptions() -> None:
    assert control.describe_faults(0, ["server_error"], 0) == "-"
    assert control.describe_faults(1.0, ["server_error"], 0) == "server_error 100%"
    assert control.describe_faults(0.25, ["rate_limit", "timeout"], 3) == "rate_limit,timeout 25% first 3"
    assert control.describe_faults(0, [], 3) == "server_error first 3"
    assert control.describe_latency(None, 0, 0) == "-"
    assert control.describe_latency(None, 2000, 20) == "ttft 2000ms itl 20ms"
    assert control.describe_latency(None, 0, 20) == "itl 20ms"
    assert control.describe_latency("gpt-4o", 0, 0) == "profile gpt-4o"


def test_probe_through_nginx_blames_the_faulty_instance_only(
    cluster3: tuple[Cli, dict[str, int]], tmp_path
) -> None:
    from tests.nginx import run_nginx, upstream

    cli, port = cluster3
    cli("fault", "sim-2", "--type", "server_error", "--rate", "1.0")
    with run_nginx(tmp_path, upstream(list(port.values()))) as gateway:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmsim",
                "probe",
                gateway,
                "--json",
                "--requests",
                "90",
                "--run-dir",
                str(cli.run_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    rows = {row["instance"]: row for row in json.loads(done.stdout)["instances"]}
    assert rows["sim-2"]["errors"] == {"500": rows["sim-2"]["requests"]} and rows["sim-2"]["requests"] > 0
    assert rows["sim-1"]["errors"] == {} and rows["sim-3"]["errors"] == {}
