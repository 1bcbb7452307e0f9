"""The cluster's lifecycle under supervisord: find it running, wait for its instances to be
healthy, apply a new size, stop one instance or all of them, and say why nothing answers.

No argparse and no rendering here (those are ``llmsim_cluster.cli``'s): every function returns a
value or raises :class:`ClusterError` with one sentence a user can act on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import Faults

from llmsim_cluster import ClusterError, ports, state, status, supervisor
from llmsim_cluster.state import Cluster, Instance

STOP_TIMEOUT_S = 30.0
ORPHANED, GONE = "ORPHANED", "GONE"  # status states of instances whose supervisord died
_FAILED_STATES = ("BACKOFF", "EXITED", "FATAL")


def deadline_loop(timeout: float, interval: float = 0.05) -> Iterator[None]:
    """Yield until ``timeout`` seconds have passed, pausing ``interval`` between rounds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(interval)


def nothing_here(run_dir: Path) -> ClusterError:
    return ClusterError(f"no cluster is running in {run_dir} (start one with `llmsim cluster up`)")


def leftovers(run_dir: Path) -> dict[str, int]:
    """Instance ID -> PID of this run dir's instances still alive, per /proc (see ``supervisor.members``)."""
    found: dict[str, int] = {}
    for pid, name in sorted(supervisor.members(run_dir).items()):
        with contextlib.suppress(OSError):  # supervisord made each instance its own group's leader
            if name not in found or os.getpgid(pid) == pid:
                found[name] = pid
    return found


def listing(left: dict[str, int]) -> str:
    return ", ".join(
        f"{name} (pid {pid})" for name, pid in sorted(left.items(), key=lambda i: (len(i[0]), i))
    )


def not_running(run_dir: Path) -> ClusterError:
    """Why no supervisord answers in ``run_dir``: none was started, or it died, alone or not."""
    daemon = supervisor.daemon(run_dir)
    if daemon is not None:
        return ClusterError(
            f"supervisord (pid {daemon}) in {run_dir} does not answer on its socket; "
            "`llmsim cluster down` stops it and its instances"
        )
    pid = supervisor.recorded_pid(run_dir)
    its = f"its supervisord (pid {pid})" if pid else "its supervisord"
    left = leftovers(run_dir)
    if left:
        return ClusterError(
            f"the cluster in {run_dir} lost {its}, but {len(left)} of its instances still run without it: "
            f"{listing(left)}; stop them with `llmsim cluster down`"
        )
    if supervisor.traces(run_dir):
        return ClusterError(
            f"no cluster is running in {run_dir}: {its} died, and its instances with it; "
            "`llmsim cluster down` clears what it left"
        )
    return nothing_here(run_dir)


def running(run_dir: Path) -> tuple[Cluster, Any]:
    api = supervisor.running(run_dir)
    if api is None:
        raise not_running(run_dir)
    cluster = state.load(run_dir)
    if cluster is None:
        raise nothing_here(run_dir)
    return cluster, api


def instance(cluster: Cluster, instance_id: str) -> Instance:
    instance = cluster.instance(instance_id)
    if instance is None:
        known = ", ".join(i.id for i in cluster.instances)
        raise ClusterError(f"unknown instance {instance_id!r}; this cluster has {known}")
    return instance


def check_free(instances: list[Instance]) -> None:
    for instance in instances:
        if not ports.is_free(instance.host, instance.port):
            holder = ports.owner(instance.port)
            by = f" by {holder}" if holder else ""
            raise ClusterError(
                f"port {instance.port} on {instance.host} (for {instance.id}) is already in use{by}; "
                "choose another --base-port or stop what holds it"
            )


def log_tail(run_dir: Path, instance_id: str, lines: int = 15) -> str:
    try:
        text = supervisor.log_path(run_dir, instance_id).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_healthy(run_dir: Path, api: Any, instances: list[Instance], timeout: float) -> None:
    """Return once every instance answers /health and supervisor calls it RUNNING (up for startsecs).

    Fails fast, naming the instance and showing its log, if supervisor saw one exit.
    """
    pending = {i.id: i for i in instances}
    for _ in deadline_loop(timeout):
        states = {info["name"]: info["statename"] for info in api.getAllProcessInfo()}
        failed = next((i for i in pending if states.get(i) in _FAILED_STATES), None)
        if failed:
            raise ClusterError(
                f"instance {failed} exited during start-up (supervisor state {states[failed]}); "
                f"end of its log:\n{log_tail(run_dir, failed)}"
            )
        for instance in [i for i in pending.values() if states.get(i.id) == "RUNNING"]:
            if status.healthy(instance):
                del pending[instance.id]
        if not pending:
            return
    first = next(iter(pending))
    raise ClusterError(
        f"instance {first} did not become healthy within {timeout:g} s; end of its log:\n{log_tail(run_dir, first)}"
    )


def apply(run_dir: Path, api: Any, cluster: Cluster) -> None:
    """Make supervisord match ``cluster`` as `supervisorctl update` does; untouched instances keep running."""
    supervisor.write_config(run_dir, cluster)
    added, _changed, removed = api.reloadConfig()[0]
    for group in removed:  # stop them all at once, then wait: one at a time costs ~1 s each
        api.stopProcessGroup(group, False)
    for _ in deadline_loop(STOP_TIMEOUT_S):
        if all(
            i["statename"] in ("STOPPED", "EXITED", "FATAL")
            for i in api.getAllProcessInfo()
            if i["group"] in removed
        ):
            break
    for group in removed:
        api.removeProcessGroup(group)
    for group in added:
        api.addProcessGroup(group)


def shutdown(run_dir: Path, api: Any | None, cluster: Cluster | None) -> None:
    """Stop supervisord and every instance; return only when no process remains and ports are free.

    supervisord stops its instances itself (SIGTERM, SIGKILL after ``STOP_WAIT_S``). Instances
    without one (it died, or dies now) get the same from here, found in /proc, so nothing is left.
    """
    daemon = supervisor.daemon(run_dir)
    if api is not None:
        with contextlib.suppress(supervisor.SupervisorGone):
            daemon = api.getPID()
            api.shutdown()
    elif daemon is not None:  # alive but not answering: SIGTERM makes it stop its instances too
        supervisor.send([daemon], signal.SIGTERM)
    instances = cluster.instances if cluster else []
    termed: dict[int, float] = {}  # orphan PID -> when it got SIGTERM
    for _ in deadline_loop(STOP_TIMEOUT_S, interval=0.1):
        managed = daemon is not None and supervisor.alive(daemon)
        left = supervisor.members(run_dir)
        if not managed:
            now = time.monotonic()
            supervisor.send([pid for pid in left if pid not in termed], signal.SIGTERM)
            termed.update({pid: termed.get(pid, now) for pid in left})
            supervisor.send(
                [pid for pid in left if now - termed[pid] >= supervisor.STOP_WAIT_S], signal.SIGKILL
            )
        busy = [i.port for i in instances if not ports.is_free(i.host, i.port)]
        if not managed and not left and not busy:
            supervisor.clean(run_dir)
            return
    alive = ([daemon] if managed else []) + sorted(left)
    raise ClusterError(
        f"the cluster did not stop within {STOP_TIMEOUT_S:g} s (pids {alive} alive, ports {busy} busy)"
    )


def stop(api: Any, instance: Instance) -> bool:
    """Stop and wait until the process is gone; False if it was not running."""
    try:
        api.stopProcess(instance.id, True)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != Faults.NOT_RUNNING:
            raise
        return False
    return True


def check_range(base_port: int, n: int) -> None:
    if not 1 <= base_port <= 65536 - n:
        raise ClusterError(
            f"{n} instances from --base-port {base_port} need ports {base_port}-{base_port + n - 1}, "
            "outside 1-65535"
        )
