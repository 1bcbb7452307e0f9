"""What every instance is doing right now, and the table that shows it.

Supervisor knows PID, state and start time; the instance itself knows whether it answers, how
many requests it served and which faults and latency are active (/llmsim/stats, with the admin
token when the cluster has one); /proc knows its memory. ``collect`` asks all three, in parallel
across instances, with short timeouts so a hung instance only costs its own row.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from llmsim_cluster import control
from llmsim_cluster.state import Cluster, Instance

TIMEOUT_S = 0.5
# Polled or changed by the cluster CLI itself; counting them would make an idle instance look busy.
MONITORING = ("/health", "/llmsim/stats", "/llmsim/config", "/llmsim/reset")
_STATE_STYLE = {
    **{"RUNNING": "green", "STARTING": "yellow", "BACKOFF": "red", "FATAL": "red", "EXITED": "red"},
    **{"ORPHANED": "bold red", "GONE": "red"},  # supervisord died: still running without it, or not
}


@dataclass
class Row:
    id: str
    url: str
    pid: int | None
    state: str
    healthy: bool
    health_ms: float | None
    health_error: str | None
    uptime_s: float | None
    requests: int | None
    rss_bytes: int | None
    # /llmsim/stats "active": faults as FaultPolicy.snapshot() gives them, and the latency settings.
    faults: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    stats_error: str | None = None  # /health answered but /llmsim/stats did not (e.g. HTTP 401)


def get_json(instance: Instance, path: str, timeout: float = TIMEOUT_S, token: str | None = None) -> Any:
    """GET ``path`` as JSON; stdlib http.client, so the CLI needs no HTTP dependency and no proxy."""
    status, data = control.request(instance, "GET", path, token=token, timeout=timeout)
    if status != 200:
        raise OSError(f"HTTP {status}")
    if data is None:
        raise ValueError(f"{path} did not answer JSON")
    return data


def rss_bytes(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return str(exc) or type(exc).__name__


# Anything a broken, half-started or impostor peer can make the stdlib raise: "unhealthy", never a crash.
ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, http.client.HTTPException)


def healthy(instance: Instance, timeout: float = TIMEOUT_S) -> bool:
    """True if ``instance`` answers GET /health with status healthy; any failure is just False."""
    try:
        return get_json(instance, "/health", timeout).get("status") == "healthy"
    except ERRORS:
        return False


def _row(instance: Instance, info: dict[str, Any] | None, token: str | None = None) -> Row:
    state = info["statename"] if info else "UNKNOWN"
    pid = (info or {}).get("pid") or None
    uptime = info["now"] - info["start"] if info and state in ("RUNNING", "STARTING") else None
    row = Row(instance.id, instance.url, pid, state, False, None, None, uptime, None, rss_bytes(pid))
    started = time.perf_counter()
    try:
        row.healthy = get_json(instance, "/health").get("status") == "healthy"
        row.health_ms = round((time.perf_counter() - started) * 1000, 1)
    except ERRORS as exc:
        row.health_error = _why(exc)
        return row
    try:
        counts = get_json(instance, "/llmsim/stats", token=token)
        monitoring = sum(sum(counts["requests"].get(p, {}).values()) for p in MONITORING)
        row.requests = counts["requests_total"] - monitoring
        active = counts.get("active") or {}  # an older instance has no "active"
        row.faults, row.latency = active.get("faults"), active.get("latency")
    except ERRORS as exc:
        row.stats_error = _why(exc)
    return row


def collect(cluster: Cluster, process_info: list[dict[str, Any]], token: str | None = None) -> list[Row]:
    """One row per instance of ``cluster``; ``process_info`` is supervisor's getAllProcessInfo().

    ``token`` is the admin token for /llmsim/stats (see ``control.admin_token``).
    """
    by_name = {info["name"]: info for info in process_info}
    instances = cluster.instances
    with ThreadPoolExecutor(max_workers=min(32, len(instances) or 1)) as pool:
        return list(pool.map(lambda i: _row(i, by_name.get(i.id), token), instances))


def summary(rows: list[Row]) -> dict[str, int]:
    return {
        "instances": len(rows),
        "healthy": sum(r.healthy for r in rows),
        "running": sum(r.state == "RUNNING" for r in rows),
        "stopped": sum(r.state == "STOPPED" for r in rows),
        "requests": sum(r.requests or 0 for r in rows),
        "rss_bytes": sum(r.rss_bytes or 0 for r in rows),
    }


def as_json(
    cluster: Cluster, run_dir: Path, rows: list[Row], supervisord: dict[str, Any] | None = None
) -> str:
    """``supervisord`` is ``{"pid", "running"}``: running false means the rows are what it left behind."""
    report = {"name": cluster.name, "run_dir": str(run_dir), "supervisord": supervisord}
    report["instances"] = [asdict(r) for r in rows]
    return json.dumps({**report, "summary": summary(rows)}, indent=2)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return (
        f"{s}s"
        if s < 60
        else f"{s // 60}m{s % 60:02d}s"
        if s < 3600
        else f"{s // 3600}h{s % 3600 // 60:02d}m"
    )


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def _faults_cell(r: Row) -> Text:
    if r.stats_error:
        why = {"HTTP 401": "needs admin token", "HTTP 403": "stats forbidden"}
        return Text(why.get(r.stats_error, f"stats {r.stats_error}"), "red")
    if r.faults is None:
        return Text("-", "dim")
    text = control.faults_from_stats(r.faults)
    return Text(text, "bold red" if text != "-" else "")


def _latency_cell(r: Row) -> Text:
    if r.latency is None:
        return Text("-", "dim")
    text = control.latency_from_stats(r.latency)
    return Text(text, "yellow" if text != "-" else "")


def render(cluster: Cluster, rows: list[Row]) -> Group:
    """The status table plus a one-line summary, for a rich Console or Live."""
    # One space between columns: without faults or latency the table fits 100 columns; long fault
    # lists wrap inside their own column rather than push the table past the terminal's width.
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
        title=f"cluster [bold]{cluster.name}[/]",
        title_justify="left",
    )
    columns = ("ID", "URL", "PID", "state", "health", "uptime", "requests", "memory", "faults", "latency")
    for column in columns:
        right = column in ("PID", "requests", "memory")
        wraps = column in ("faults", "latency")
        table.add_column(column, justify="right" if right else "left", no_wrap=not wraps)
    for r in rows:
        health = (
            Text(f"ok {r.health_ms:.0f}ms", "green") if r.healthy else Text(r.health_error or "no", "red")
        )
        table.add_row(
            r.id,
            r.url,
            str(r.pid or "-"),
            Text(r.state, _STATE_STYLE.get(r.state, "dim")),
            health,
            _duration(r.uptime_s),
            "-" if r.requests is None else f"{r.requests:,}",
            _mib(r.rss_bytes),
            _faults_cell(r),
            _latency_cell(r),
        )
    s = summary(rows)
    line = (
        f"{s['instances']} instances: {s['healthy']} healthy, {s['running']} running, {s['stopped']} stopped; "
        f"{s['requests']:,} requests; {_mib(s['rss_bytes'])} RSS in total"
    )
    return Group(table, Text(line))
