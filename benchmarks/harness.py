"""Shared helpers for the bench_*.py modules: free ports, pinned servers, wrk runs, results."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmsim_cluster import ports

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    try:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(
            f"benchmarks: could not install wrk ({exc}).\n"
            "Install it yourself (Debian/Ubuntu: `apt-get install wrk`, macOS: `brew install wrk`) "
            "and run again."
        )
    found = shutil.which("wrk")
    if not found:
        sys.exit("benchmarks: apt-get finished but wrk is still not on PATH.")
    return found


def cpu_pins() -> tuple[list[str], list[str]]:
    """taskset prefixes: server on the first allowed CPU, load generator on the second."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or not shutil.which("taskset"):
        print("warning: fewer than 2 CPUs or no taskset; server and wrk are not pinned", flush=True)
        return [], []
    return ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[1])]


def free_port() -> int:
    return ports.pick_free()  # below the ephemeral range, as the tests' ports


@dataclass
class Server:
    name: str
    argv: list[str]
    ready_path: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, pin: Sequence[str]) -> None:
        """Start with ``{port}`` in argv replaced by a free port; output goes to results/<name>.log."""
        self.port = free_port()
        RESULTS.mkdir(exist_ok=True)
        log = open(RESULTS / f"{self.name}.log", "wb")  # noqa: SIM115 - the child owns it
        argv = [*pin, *(a.replace("{port}", str(self.port)) for a in self.argv)]
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=HERE
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                tail = (RESULTS / f"{self.name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited before it was ready:\n{tail}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready on {self.url} after {timeout:.0f}s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system, all threads) the server has used so far; None off Linux."""
        if self.process is None:
            return None
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (taskset execs the server, so the pid is its own)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors + non-2xx/3xx responses
    p50_ms: float
    p99_ms: float
    server_cpu_s: float | None = None  # CPU time the server used during the run, when measured

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_s(self) -> float | None:
        """Requests per CPU-second of the server: what a shared, noisy machine disturbs least
        (another process taking the CPU slows the server down, not each request's work)."""
        return self.requests / self.server_cpu_s if self.server_cpu_s else None


_WRK_JSON = re.compile(r"^WRK_JSON (.*)$", re.M)


def run_wrk(
    wrk: str,
    pin: Sequence[str],
    url: str,
    script: Path,
    duration: float,
    threads: int = 1,
    connections: int = 64,
    script_args: Sequence[str] = (),
    timeout_s: float | None = None,
) -> WrkResult:
    """One wrk run; ``script_args`` go to the script's ``init(args)``, ``timeout_s`` replaces wrk's
    2 s request timeout."""
    argv = [*pin, wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "-s", str(script)]
    if timeout_s is not None:
        argv.append(f"--timeout={timeout_s:g}s")
    argv.append(url)
    if script_args:
        argv += ["--", *script_args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    match = _WRK_JSON.search(out.stdout)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data = json.loads(match.group(1))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        data["requests"], data["duration_us"] / 1e6, errors, data["p50_us"] / 1e3, data["p99_us"] / 1e3
    )


def machine() -> dict[str, object]:
    wrk = shutil.which("wrk")
    version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0] if wrk else ""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": version.strip(),
    }


def write_results(section: str, payload: dict) -> Path:
    """Merge ``payload`` under ``section`` into results/latest.json (other benches keep theirs)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.json"
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[section] = payload
    path.write_text(json.dumps(existing, indent=2) + "\n")
    return path
