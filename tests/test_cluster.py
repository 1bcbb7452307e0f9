"""`llmsim cluster`, end to end: real supervisord, real instances, driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from llmsim_cluster import cli as cluster_cli
from llmsim_cluster import control, ports, state, status, supervisor
from llmsim_cluster.state import Instance
from tests.servers import free_port, wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


@dataclass
class Cli:
    """Runs `python -m llmsim cluster ...` against one run dir, as a user would."""

    workdir: Path
    run_dir: Path

    def __call__(
        self, *args: str | int, ok: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}, **(env or {})}
        env.update(LLMSIM_RUN_DIR=str(self.run_dir), COLUMNS="200")
        done = subprocess.run(
            [sys.executable, "-m", "llmsim", "cluster", *map(str, args)],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, f"cluster {args} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["id"]: row for row in json.loads(self("status", "--json").stdout)["instances"]}

    def teardown(self) -> None:
        """`down`; if that fails, SIGKILL what this run dir started: no test may leave a process behind."""
        if supervisor.traces(self.run_dir) and self("down", ok=False).returncode != 0:
            daemon = supervisor.daemon(self.run_dir)
            supervisor.send(
                [*([daemon] if daemon else []), *supervisor.members(self.run_dir)], signal.SIGKILL
            )


def make_cli(tmp: Path) -> Cli:
    return Cli(tmp, tmp / "run")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def serves_as(port: int, instance_id: str) -> bool:
    return httpx.get(f"{url(port)}/health", timeout=1).json()["instance"] == instance_id


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, int]]:
    """One 3-instance cluster shared by the tests that leave it as they found it."""
    cli = make_cli(tmp_path_factory.mktemp("three"))
    base = free_port(3)
    try:
        cli("up", "-n", 3, "--base-port", base)
        yield cli, base
    finally:
        cli.teardown()


def test_up_gives_three_distinct_instances(three: tuple[Cli, int]) -> None:
    cli, base = three
    ids = ["sim-1", "sim-2", "sim-3"]
    for port, instance_id in zip(range(base, base + 3), ids, strict=True):
        health = httpx.get(f"{url(port)}/health", timeout=5)
        assert health.headers["x-llmsim-instance"] == instance_id
        assert health.json()["instance"] == instance_id
        chat = httpx.post(f"{url(port)}/v1/chat/completions", json=CHAT, timeout=10)
        assert chat.status_code == 200
        assert chat.headers["x-llmsim-instance"] == instance_id
        assert chat.json()["system_fingerprint"] == instance_id

    rows = cli.status()
    assert sorted(rows) == ids
    for port, instance_id in zip(range(base, base + 3), ids, strict=True):
        row = rows[instance_id]
        assert row["url"] == url(port)
        assert row["state"] == "RUNNING" and row["healthy"] and row["health_ms"] >= 0
        assert row["pid"] > 0 and row["rss_bytes"] > 0 and row["uptime_s"] >= 0
        assert row["requests"] >= 1  # the chat completion above; /health polls are not counted

    described = state.load(cli.run_dir)
    assert described is not None
    assert [(i.id, i.port) for i in described.instances] == list(zip(ids, range(base, base + 3), strict=True))


def test_status_table_has_one_row_per_instance(three: tuple[Cli, int]) -> None:
    cli, _ = three
    cluster = state.load(cli.run_dir)
    assert cluster is not None
    rows = status.collect(cluster, supervisor.connect(cli.run_dir).getAllProcessInfo())
    out = StringIO()
    Console(file=out, width=200).print(status.render(cluster, rows))
    lines = out.getvalue().splitlines()
    for instance in cluster.instances:
        (row,) = [line for line in lines if f" {instance.url} " in line]
        assert row.split()[0] == instance.id and "RUNNING" in row and "ok" in row
    assert "3 instances: 3 healthy" in out.getvalue()
    assert "sim-2" in cli("status").stdout  # the CLI prints the same table


def test_stop_and_start_one_instance(three: tuple[Cli, int]) -> None:
    cli, base = three
    cli("stop", "sim-2")
    assert refuses(base + 1)
    rows = cli.status()
    assert rows["sim-2"]["state"] == "STOPPED" and not rows["sim-2"]["healthy"]
    assert rows["sim-1"]["healthy"] and rows["sim-3"]["healthy"]
    assert serves_as(base, "sim-1") and serves_as(base + 2, "sim-3")

    cli("start", "sim-2")
    assert serves_as(base + 1, "sim-2")
    assert cli.status()["sim-2"]["healthy"]


def test_supervisor_restarts_a_killed_instance(three: tuple[Cli, int]) -> None:
    cli, base = three
    pid = cli.status()["sim-3"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not supervisor.alive(pid), timeout=5, what="the killed instance to die")

    def back() -> bool:
        row = cli.status()["sim-3"]
        return row["healthy"] and row["pid"] != pid

    wait_until(back, timeout=20, interval=0.2, what="supervisor to restart sim-3")
    assert serves_as(base + 2, "sim-3")


def test_unknown_instance_is_one_clear_error(three: tuple[Cli, int]) -> None:
    cli, _ = three
    done = cli("stop", "sim-9", ok=False)
    assert done.returncode == 1
    assert "unknown instance 'sim-9'" in done.stderr and "Traceback" not in done.stderr


def test_scale_keeps_untouched_instances_serving(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    base = free_port(5)
    stop = threading.Event()
    served: dict[int, int] = {base: 0, base + 1: 0}
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                for port in served:
                    try:
                        response = http.post(f"{url(port)}/v1/chat/completions", json=CHAT)
                        assert response.status_code == 200, response.status_code
                        served[port] += 1
                    except Exception as exc:  # noqa: BLE001 - every failure is the finding
                        failures.append(f"{port}: {exc!r}")

    try:
        cli("up", "-n", 3, "--base-port", base)
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        wait_until(lambda: all(served.values()), what="the client to reach both instances")

        cli("scale", 5)
        assert serves_as(base + 3, "sim-4") and serves_as(base + 4, "sim-5")
        assert sorted(cli.status()) == [f"sim-{k}" for k in range(1, 6)]

        cli("scale", 2)
        assert all(refuses(p) for p in range(base + 2, base + 5))
        assert sorted(cli.status()) == ["sim-1", "sim-2"]
        described = state.load(cli.run_dir)
        assert described is not None and [i.id for i in described.instances] == ["sim-1", "sim-2"]

        before = dict(served)
        wait_until(lambda: all(served[p] > before[p] for p in served), what="more requests after scaling")
    finally:
        stop.set()
        cli.teardown()
    assert failures == []


def test_down_leaves_nothing_and_up_twice_is_an_error(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    base = free_port(2)
    try:
        cli("up", "-n", 2, "--base-port", base)
        again = cli("up", "-n", 2, "--base-port", base, ok=False)
        assert again.returncode == 1
        assert "already running" in again.stderr and "Traceback" not in again.stderr

        pids = [row["pid"] for row in cli.status().values()]
        pids.append(int((cli.run_dir / supervisor.PIDFILE).read_text()))
        cli("down")
    finally:
        cli.teardown()
    assert not any(supervisor.alive(pid) for pid in pids)
    assert ports.is_free("127.0.0.1", base) and ports.is_free("127.0.0.1", base + 1)
    assert sorted(p.name for p in cli.run_dir.iterdir()) == ["logs"]
    assert (cli.run_dir / "logs" / "sim-1.log").exists()
    for command in (["status"], ["down"]):
        done = cli(*command, ok=False)
        assert done.returncode == 1 and "no cluster is running" in done.stderr


def test_taken_port_is_one_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    base = free_port(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen()
        done = cli("up", "-n", 3, "--base-port", base, ok=False)
    assert done.returncode == 1
    assert f"port {base + 1} on 127.0.0.1 (for sim-2) is already in use by pid {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (cli.run_dir / supervisor.SOCK).exists() and state.load(cli.run_dir) is None
    assert ports.is_free("127.0.0.1", base)


@pytest.mark.parametrize(("args", "message"), [(["up", "-n", 0], "at least one instance")])
def test_bad_size_is_one_clear_error(tmp_path: Path, args: list[Any], message: str) -> None:
    done = make_cli(tmp_path)(*args, ok=False)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


# --- supervisord dies: nothing is left behind -------------------------------------------------


def test_instances_die_with_a_killed_supervisord_and_down_clears_up(tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    base = free_port(2)
    try:
        cli("up", "-n", 2, "--base-port", base)
        pids = [row["pid"] for row in cli.status().values()]
        daemon = supervisor.recorded_pid(cli.run_dir)
        assert daemon is not None
        os.kill(daemon, signal.SIGKILL)
        wait_until(
            lambda: (
                not any(map(supervisor.alive, [daemon, *pids]))
                and ports.is_free("127.0.0.1", base)
                and ports.is_free("127.0.0.1", base + 1)
            ),
            timeout=15,
            what="the instances to die with their supervisord (the tether)",
        )
        for command in (["status"], ["stop", "sim-1"], ["fault", "all", "--clear"]):
            done = cli(*command, ok=False)
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert done.stderr.strip() == (
                f"llmsim cluster: no cluster is running in {cli.run_dir}: its supervisord (pid {daemon}) died, "
                "and its instances with it; `llmsim cluster down` clears what it left"
            )
        assert "was not running" in cli("down").stdout
        assert sorted(p.name for p in cli.run_dir.iterdir()) == ["logs"]
        cli("up", "-n", 2, "--base-port", base)
        assert serves_as(base, "sim-1") and serves_as(base + 1, "sim-2")
    finally:
        cli.teardown()


def test_leftovers_of_a_dead_supervisord_are_reported_and_stopped(tmp_path: Path) -> None:
    """An instance that outlives its supervisord (no tether off Linux, or one that will not stop):
    status shows it, `up` refuses to start over it, `down` stops it as supervisord would: SIGTERM,
    then SIGKILL ``STOP_WAIT_S`` later. A stand-in that ignores SIGTERM plays it."""
    cli = make_cli(tmp_path)
    base = free_port(2)
    state.save(cli.run_dir, state.Cluster("default", "127.0.0.1", base, size=2))
    (cli.run_dir / supervisor.PIDFILE).write_text("999999999\n")  # beyond any pid_max: dead
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print(flush=True); time.sleep(120)"],
        env={
            **os.environ,  # what supervisord puts in the environment of its children
            supervisor.SERVER_URL_ENV: f"unix://{cli.run_dir / supervisor.SOCK}",
            supervisor.PROCESS_NAME_ENV: "sim-1",
        },
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline()  # SIGTERM is ignored from here
        done = cli("status", "--json", ok=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip() == (
            f"llmsim cluster: the cluster in {cli.run_dir} lost its supervisord (pid 999999999), but 1 of its "
            f"instances still run without it: sim-1 (pid {stubborn.pid}); stop them with `llmsim cluster down`"
        )
        report = json.loads(done.stdout)
        assert report["supervisord"] == {"pid": 999999999, "running": False}
        rows = {row["id"]: row for row in report["instances"]}
        assert rows["sim-1"]["state"] == "ORPHANED" and rows["sim-1"]["pid"] == stubborn.pid
        assert rows["sim-2"]["state"] == "GONE" and rows["sim-2"]["pid"] is None
        assert "ORPHANED" in cli("status", ok=False).stdout
        up = cli("up", "-n", 2, "--base-port", base, ok=False)
        assert up.returncode == 1 and f"sim-1 (pid {stubborn.pid})" in up.stderr

        started = time.monotonic()
        done = cli("down")
        assert f"stopped the instances left running: sim-1 (pid {stubborn.pid})" in done.stdout
        assert time.monotonic() - started >= supervisor.STOP_WAIT_S
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert list(cli.run_dir.iterdir()) == []
    finally:
        stubborn.kill()
        stubborn.wait()


# --- no traceback, whatever happens -------------------------------------------------------------


def _self_connected() -> socket.socket:
    """A socket connected to itself, as a connect to an unused port in the ephemeral range can be."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port()
    sock.bind(("127.0.0.1", port))
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_health_poll_that_reaches_itself_is_not_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _self_connected()
    assert control.connected_to_itself(probe)
    probe.close()
    with socket.socket() as other:
        assert not control.connected_to_itself(other)  # not connected at all
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: _self_connected())
    instance = Instance("sim-1", "127.0.0.1", 1)
    with pytest.raises(ConnectionRefusedError, match="connected to itself"):
        control.request(instance, "GET", "/health")
    assert not status.healthy(instance)  # not http.client.BadStatusLine('GET /health HTTP/1.1')
    assert status.collect(state.Cluster("c", "127.0.0.1", 1, size=1), [])[0].health_error == "refused"


def test_unexpected_errors_are_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_: Any) -> int:
        raise RuntimeError("boom\nand more")

    monkeypatch.setattr(cluster_cli, "cmd_status", boom)
    assert cluster_cli.main(["status", "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"llmsim cluster: RuntimeError: boom (run dir {tmp_path})\n"

    broken = make_cli(tmp_path / "broken")
    broken.run_dir.mkdir(parents=True)
    (broken.run_dir / state.FILE).write_text("{")
    (tmp_path / "file").write_text("")
    for cli, args in (
        (broken, ["status"]),
        (broken, ["fault", "all", "--clear"]),
        (Cli(tmp_path, tmp_path / "file"), ["up", "-n", 1, "--base-port", free_port()]),
    ):
        done = cli(*args, ok=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cleared" in broken("down").stdout  # a broken cluster.json does not stop `down`
    assert not (broken.run_dir / state.FILE).exists()


def test_free_port_stays_below_the_ephemeral_range() -> None:
    low, _ = ports.ephemeral_range()
    bases = [free_port(3) for _ in range(30)]
    taken = [p for base in bases for p in range(base, base + 3)]
    assert len(set(taken)) == len(taken)  # never the same port twice in one process
    if low > 21000:
        assert max(taken) < low
