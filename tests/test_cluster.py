"""`llmsim cluster`, end to end: real supervisord, real instances, driven through the real CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from cluster import ports, state, status, supervisor
from tests.servers import wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def free_run(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are all free on 127.0.0.1."""
    for _ in range(200):
        base = random.randint(20000, 60000 - n)
        if all(ports.is_free("127.0.0.1", p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no run of {n} free ports found")


@dataclass
class Cli:
    """Runs `python -m llmsim cluster ...` against one run dir, as a user would."""

    workdir: Path
    run_dir: Path

    def __call__(self, *args: str | int, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
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
        """`down`, and if that fails, TERM supervisord: no test may leave one behind."""
        if (self.run_dir / supervisor.SOCK).exists() and self("down", ok=False).returncode != 0:
            pidfile = self.run_dir / supervisor.PIDFILE
            if pidfile.exists():
                os.kill(int(pidfile.read_text()), signal.SIGTERM)


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
    base = free_run(3)
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
    base = free_run(5)
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
    base = free_run(2)
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
    base = free_run(3)
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
