"""What every instance is doing right now, and the table that shows it.

Supervisor knows PID, state and start time; the instance itself knows whether it answers and
how many requests it served; /proc knows its memory. ``collect`` asks all three, in parallel
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

from cluster.state import Cluster, Instance

TIMEOUT_S = 0.5
# Polled by `status` itself; counting them would make an idle instance look busy.
MONITORING = ("/health", "/llmsim/stats")
_STATE_STYLE = {"RUNNING": "green", "STARTING": "yellow", "BACKOFF": "red", "FATAL": "red", "EXITED": "red"}


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


def get_json(instance: Instance, path: str, timeout: float = TIMEOUT_S) -> Any:
    """GET ``path`` as JSON; stdlib http.client, so the CLI needs no HTTP dependency and no proxy."""
    conn = http.client.HTTPConnection(instance.host, instance.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return json.loads(body)
    finally:
        conn.close()


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


def _row(instance: Instance, info: dict[str, Any] | None) -> Row:
    state = info["statename"] if info else "UNKNOWN"
    pid = (info or {}).get("pid") or None
    healthy, health_ms, error, requests = False, None, None, None
    started = time.perf_counter()
    try:
        healthy = get_json(instance, "/health").get("status") == "healthy"
        health_ms = round((time.perf_counter() - started) * 1000, 1)
        counts = get_json(instance, "/llmsim/stats")
        monitoring = sum(sum(counts["requests"].get(p, {}).values()) for p in MONITORING)
        requests = counts["requests_total"] - monitoring
    except TimeoutError:
        error = "timeout"
    except ConnectionRefusedError:
        error = "refused"
    except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
        error = str(exc) or type(exc).__name__
    uptime = info["now"] - info["start"] if info and state in ("RUNNING", "STARTING") else None
    return Row(
        instance.id, instance.url, pid, state, healthy, health_ms, error, uptime, requests, rss_bytes(pid)
    )


def collect(cluster: Cluster, process_info: list[dict[str, Any]]) -> list[Row]:
    """One row per instance of ``cluster``; ``process_info`` is supervisor's getAllProcessInfo()."""
    by_name = {info["name"]: info for info in process_info}
    instances = cluster.instances
    with ThreadPoolExecutor(max_workers=min(32, len(instances) or 1)) as pool:
        return list(pool.map(lambda i: _row(i, by_name.get(i.id)), instances))


def summary(rows: list[Row]) -> dict[str, int]:
    return {
        "instances": len(rows),
        "healthy": sum(r.healthy for r in rows),
        "running": sum(r.state == "RUNNING" for r in rows),
        "stopped": sum(r.state == "STOPPED" for r in rows),
        "requests": sum(r.requests or 0 for r in rows),
        "rss_bytes": sum(r.rss_bytes or 0 for r in rows),
    }


def as_json(cluster: Cluster, run_dir: Path, rows: list[Row]) -> str:
    report = {"name": cluster.name, "run_dir": str(run_dir), "instances": [asdict(r) for r in rows]}
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


def render(cluster: Cluster, rows: list[Row]) -> Group:
    """The status table plus a one-line summary, for a rich Console or Live."""
    # One space between columns: the table fits 80 columns, the width of a pipe or a small terminal.
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
        title=f"cluster [bold]{cluster.name}[/]",
        title_justify="left",
    )
    for column in ("ID", "URL", "PID", "state", "health", "uptime", "requests", "memory"):
        right = column in ("PID", "requests", "memory")
        table.add_column(column, justify="right" if right else "left", no_wrap=column in ("ID", "URL"))
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
        )
    s = summary(rows)
    line = (
        f"{s['instances']} instances: {s['healthy']} healthy, {s['running']} running, {s['stopped']} stopped; "
        f"{s['requests']:,} requests; {_mib(s['rss_bytes'])} RSS in total"
    )
    return Group(table, Text(line))
