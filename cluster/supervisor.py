"""supervisord for one cluster: its config file, starting it, and its XML-RPC API over a unix socket.

Each instance is its own program *and* process group, so ``scale`` can add or remove one
(``reloadConfig`` + ``addProcessGroup``/``removeProcessGroup``, as ``supervisorctl update``
does) while the others keep serving.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from cluster import ClusterError, state
from cluster.state import Cluster, Instance

CONF = "supervisord.conf"
SOCK = "supervisor.sock"
PIDFILE = "supervisord.pid"
LOGS = "logs"


def log_path(run_dir: Path, instance_id: str) -> Path:
    return run_dir / LOGS / f"{instance_id}.log"


def _quote(value: str | os.PathLike[str]) -> str:
    # supervisord %-expands every value and shlex-splits `command`.
    return str(value).replace("%", "%%")


def serve_command(instance: Instance, serve_args: list[str]) -> list[str]:
    """The venv's own python, so no activation is needed; our flags last, so they win."""
    return [
        sys.executable, "-m", "llmsim", "serve", *serve_args,
        "--host", instance.host, "--port", str(instance.port), "--instance-id", instance.id,
    ]  # fmt: skip


def render(run_dir: Path, cluster: Cluster) -> str:
    sections = [
        f"[unix_http_server]\nfile={_quote(run_dir / SOCK)}\nchmod=0700\n",
        f"[supervisord]\nidentifier=llmsim-{cluster.name}\nlogfile={_quote(run_dir / LOGS / 'supervisord.log')}\n"
        f"pidfile={_quote(run_dir / PIDFILE)}\nchildlogdir={_quote(run_dir / LOGS)}\nloglevel=info\n",
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
    ]
    for instance in cluster.instances:
        sections.append(
            f"[program:{instance.id}]\n"
            f"command={_quote(shlex.join(serve_command(instance, cluster.serve_args)))}\n"
            f"directory={_quote(cluster.workdir)}\n"
            "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=3\n"
            "stopasgroup=true\nkillasgroup=true\nstopwaitsecs=5\n"
            f"redirect_stderr=true\nstdout_logfile={_quote(log_path(run_dir, instance.id))}\n"
            "stdout_logfile_maxbytes=10MB\nstdout_logfile_backups=1\n"
        )
    return "\n".join(sections)


def write_config(run_dir: Path, cluster: Cluster) -> None:
    (run_dir / LOGS).mkdir(parents=True, exist_ok=True)
    (run_dir / CONF).write_text(render(run_dir, cluster))


def start(run_dir: Path) -> None:
    """Start supervisord as a daemon; it has its control socket open by the time this returns."""
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(run_dir / CONF)],
        capture_output=True,
        text=True,
        cwd=run_dir,
    )
    if done.returncode != 0:
        lines = (done.stderr + done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
        error = next((line.removeprefix("Error: ") for line in lines if line.startswith("Error:")), lines[-1])
        hint = " (choose a shorter --run-dir)" if "path too long" in error else ""
        raise ClusterError(f"supervisord failed to start: {error}{hint}")


def connect(run_dir: Path) -> Any:
    """The ``supervisor`` namespace of the XML-RPC API (``.getState()``, ``.stopProcess(...)``…)."""
    transport = SupervisorTransport(None, None, f"unix://{run_dir / SOCK}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def running(run_dir: Path) -> Any | None:
    """The API if this run dir's supervisord answers, else None."""
    if not (run_dir / SOCK).exists():
        return None
    api = connect(run_dir)
    try:
        api.getPID()
    except (OSError, xmlrpc.client.Error):
        return None
    return api


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a container's PID 1 may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def clean(run_dir: Path) -> None:
    """Remove runtime files, keep logs."""
    for name in (CONF, SOCK, PIDFILE, state.FILE):
        (run_dir / name).unlink(missing_ok=True)
