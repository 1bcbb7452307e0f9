"""supervisord for one cluster: its config file, starting it, and its XML-RPC API over a unix socket.

Each instance is its own program *and* process group, so ``scale`` can add or remove one
(``reloadConfig`` + ``addProcessGroup``/``removeProcessGroup``, as ``supervisorctl update``
does) while the others keep serving.

supervisord can die without stopping its instances (``kill -9``, OOM killer). Two defences:
each instance is started through :mod:`llmsim_cluster.tether`, so on Linux the kernel sends it SIGTERM
when supervisord dies; and :func:`members` finds whatever still runs anyway, from /proc, by the
``SUPERVISOR_SERVER_URL`` supervisord puts into each child's environment (our socket's path, so
a reused PID cannot pass for one of ours).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import subprocess
import sys
import xmlrpc.client
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from llmsim_cluster import ClusterError, serve, state, tether
from llmsim_cluster.state import Cluster

CONF = "supervisord.conf"
SOCK = "supervisor.sock"
PIDFILE = "supervisord.pid"
LOGS = "logs"
STOP_WAIT_S = 5  # SIGTERM, then SIGKILL this much later: supervisord's stopwaitsecs, and ours for orphans
SERVER_URL_ENV = "SUPERVISOR_SERVER_URL"
PROCESS_NAME_ENV = "SUPERVISOR_PROCESS_NAME"


class SupervisorGone(ClusterError):
    """supervisord stopped answering on its socket."""


def log_path(run_dir: Path, instance_id: str) -> Path:
    return run_dir / LOGS / f"{instance_id}.log"


def _quote(value: str | os.PathLike[str]) -> str:
    # supervisord %-expands every value and shlex-splits `command`.
    return str(value).replace("%", "%%")


def program_command(run_dir: Path, instance: state.Instance, serve_args: list[str]) -> list[str]:
    """``llmsim serve`` for ``instance``, behind the tether that ties its life to supervisord's.

    ``-I``: the tether runs in the user's directory, whose own ``cluster`` package must not shadow ours.
    """
    tie = [sys.executable, "-I", "-m", tether.__name__, str(run_dir / PIDFILE)]
    return [*tie, *serve.command(instance, serve_args)]


def render(run_dir: Path, cluster: Cluster) -> str:
    # umask 077: the pidfile and every log supervisord creates are private, like the files we write.
    sections = [
        f"[unix_http_server]\nfile={_quote(run_dir / SOCK)}\nchmod=0600\n",
        f"[supervisord]\nidentifier=llmsim-{cluster.name}\nlogfile={_quote(run_dir / LOGS / 'supervisord.log')}\n"
        f"pidfile={_quote(run_dir / PIDFILE)}\nchildlogdir={_quote(run_dir / LOGS)}\nloglevel=info\numask=077\n",
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
    ]
    for instance in cluster.instances:
        sections.append(
            f"[program:{instance.id}]\n"
            f"command={_quote(shlex.join(program_command(run_dir, instance, cluster.serve_args)))}\n"
            f"directory={_quote(cluster.workdir)}\n"
            "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=3\n"
            f"stopasgroup=true\nkillasgroup=true\nstopwaitsecs={STOP_WAIT_S}\n"
            f"redirect_stderr=true\nstdout_logfile={_quote(log_path(run_dir, instance.id))}\n"
            "stdout_logfile_maxbytes=10MB\nstdout_logfile_backups=1\n"
        )
    return "\n".join(sections)


def write_config(run_dir: Path, cluster: Cluster) -> None:
    logs = run_dir / LOGS
    state.private_dir(run_dir)
    state.private_dir(logs)
    for old in logs.iterdir():  # logs of an older llmsim may still be world-readable
        with contextlib.suppress(OSError):
            old.chmod(0o600)
    state.write_private(run_dir / CONF, render(run_dir, cluster))


def start(run_dir: Path, env: dict[str, str] | None = None) -> None:
    """Start supervisord as a daemon; it has its control socket open by the time this returns.

    ``env`` is added to the environment supervisord (and so every instance) inherits: the way
    secrets reach the instances without being written anywhere.
    """
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(run_dir / CONF)],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env={**os.environ, **(env or {})},
        umask=0o077,  # its log is created before it applies its own umask
    )
    if done.returncode != 0:
        lines = (done.stderr + done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
        error = next((line.removeprefix("Error: ") for line in lines if line.startswith("Error:")), lines[-1])
        hint = " (choose a shorter --run-dir)" if "path too long" in error else ""
        raise ClusterError(f"supervisord failed to start: {error}{hint}")


class Api:
    """supervisord's ``supervisor`` XML-RPC namespace (``.getState()``, ``.stopProcess(...)``…).

    A transport failure becomes :class:`SupervisorGone`, one sentence naming the run dir.
    """

    def __init__(self, run_dir: Path) -> None:
        transport = SupervisorTransport(None, None, f"unix://{run_dir / SOCK}")
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor
        self._run_dir = run_dir

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._proxy, name)

        def call(*args: Any) -> Any:
            try:
                return method(*args)
            except (OSError, http.client.HTTPException) as exc:
                raise SupervisorGone(f"lost contact with supervisord in {self._run_dir}: {exc}") from None

        return call


def connect(run_dir: Path) -> Any:
    return Api(run_dir)


def running(run_dir: Path) -> Any | None:
    """The API if this run dir's supervisord answers, else None."""
    if not (run_dir / SOCK).exists():
        return None
    api = connect(run_dir)
    try:
        api.getPID()
    except (SupervisorGone, xmlrpc.client.Error):
        return None
    return api


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a container's PID 1 may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def recorded_pid(run_dir: Path) -> int | None:
    """supervisord's PID from its pidfile, which outlives it when it is killed."""
    try:
        return int((run_dir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def daemon(run_dir: Path) -> int | None:
    """The PID of this run dir's supervisord if it still runs, answering or not."""
    pid = recorded_pid(run_dir)
    if pid is None or not alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if str(run_dir / CONF).encode() in cmdline else None


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (readable for our own processes only)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return dict(pairs)


def members(run_dir: Path) -> dict[int, str]:
    """Live processes started by this run dir's supervisord, whether it still runs: PID -> program name.

    Includes anything they started in turn (same environment). Empty where there is no /proc.
    """
    url = f"unix://{run_dir / SOCK}"
    try:
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return {}
    found = {}
    for pid in pids:
        env = environ(pid)
        if env.get(SERVER_URL_ENV) == url and alive(pid):
            found[pid] = env.get(PROCESS_NAME_ENV, "?")
    return found


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each PID; SIGCONT after SIGTERM, since a stopped process cannot act on it."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGCONT)


def traces(run_dir: Path) -> bool:
    """Whether a cluster left files here (it runs, or died without ``down``)."""
    return any((run_dir / name).exists() for name in (CONF, SOCK, PIDFILE, state.FILE))


def clean(run_dir: Path) -> None:
    """Remove runtime files, keep logs."""
    for name in (CONF, SOCK, PIDFILE, state.FILE):
        (run_dir / name).unlink(missing_ok=True)
