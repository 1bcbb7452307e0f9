"""``llmsim cluster …``: start N instances under supervisord, watch them, break and heal them one by one."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from supervisor.xmlrpc import Faults

from llmsim.faults import FaultType
from llmsim_cluster import ClusterError, control, lifecycle, serve, state, status, supervisor
from llmsim_cluster.state import Cluster, Instance

# Piped output (CI logs, `| less`) has no terminal width; rich would assume 80 and squeeze the
# table's last columns to nothing.
console = Console() if Console().is_terminal else Console(width=140)


def _collect(cluster: Cluster, api: Any, run_dir: Path) -> list[status.Row]:
    return status.collect(cluster, api.getAllProcessInfo(), control.admin_token(run_dir, cluster))


def _show(cluster: Cluster, api: Any, run_dir: Path) -> Any:
    return status.render(cluster, _collect(cluster, api, run_dir))


def _live(refresh: Callable[[], Any]) -> None:
    """Redraw until Ctrl-C (KeyboardInterrupt propagates to the caller)."""
    with Live(refresh(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(1)
            live.update(refresh(), refresh=True)


# --- commands -------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace, run_dir: Path) -> int:
    if args.n < 1:
        raise ClusterError(f"a cluster needs at least one instance (got -n {args.n})")
    for flag, value in (("--name", args.name), ("--id-prefix", args.id_prefix)):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):  # they become file and program names
            raise ClusterError(f"{flag} may contain only letters, digits, '_', '.' and '-' (got {value!r})")
    lifecycle.check_range(args.base_port, args.n)
    if supervisor.running(run_dir):
        raise ClusterError(
            f"cluster {args.name!r} is already running in {run_dir}; see `llmsim cluster status` or stop it with `llmsim cluster down`"
        )
    if supervisor.daemon(run_dir) is not None or lifecycle.leftovers(run_dir):
        raise lifecycle.not_running(run_dir)
    serve_args, secrets = serve.lift_secrets(args.serve_args)
    cluster = Cluster(
        args.name, args.host, args.base_port, args.id_prefix, serve_args, args.n, str(Path.cwd())
    )
    lifecycle.check_free(cluster.instances)
    started = time.monotonic()
    supervisor.clean(run_dir)
    supervisor.write_config(run_dir, cluster)
    try:
        supervisor.start(run_dir, secrets)
    except ClusterError:
        supervisor.clean(run_dir)
        raise
    api = supervisor.connect(run_dir)
    try:
        lifecycle.wait_healthy(run_dir, api, cluster.instances, args.timeout)
        state.save(run_dir, cluster)
    except BaseException:
        lifecycle.shutdown(run_dir, api, cluster)
        raise
    console.print(
        f"cluster {cluster.name!r}: {args.n} instances healthy in {time.monotonic() - started:.1f} s"
    )
    if not args.foreground:
        console.print(_show(cluster, api, run_dir))
        console.print(f"run dir {run_dir}; stop it with `llmsim cluster down`")
        return 0
    try:
        _live(lambda: _show(cluster, api, run_dir))
    except KeyboardInterrupt:
        console.print("\nstopping the cluster…")
        lifecycle.shutdown(run_dir, api, cluster)
    return 0


def _report_orphans(args: argparse.Namespace, run_dir: Path) -> None:
    """supervisord is gone but instances are left: show every row (ORPHANED or GONE) as usual."""
    cluster = state.load(run_dir)
    left = lifecycle.leftovers(run_dir) if supervisor.daemon(run_dir) is None else {}
    if cluster is None or not left:
        return
    info = [
        {
            "name": i.id,
            "statename": lifecycle.ORPHANED if i.id in left else lifecycle.GONE,
            "pid": left.get(i.id),
        }
        for i in cluster.instances
    ]
    rows = status.collect(cluster, info, control.admin_token(run_dir, cluster))
    if args.json:
        daemon = {"pid": supervisor.recorded_pid(run_dir), "running": False}
        print(status.as_json(cluster, run_dir, rows, daemon))
    else:
        console.print(status.render(cluster, rows))


def cmd_status(args: argparse.Namespace, run_dir: Path) -> int:
    """Exit status 1, after the table, when supervisord is gone: the cluster is not what `up` made."""
    if supervisor.running(run_dir) is None:
        _report_orphans(args, run_dir)
        raise lifecycle.not_running(run_dir)
    cluster, api = lifecycle.running(run_dir)
    if args.json:
        daemon = {"pid": api.getPID(), "running": True}
        print(status.as_json(cluster, run_dir, _collect(cluster, api, run_dir), daemon))
    elif args.watch:
        with contextlib.suppress(KeyboardInterrupt):
            _live(lambda: _show(cluster, api, run_dir))
    else:
        console.print(_show(cluster, api, run_dir))
    return 0


def cmd_stop(args: argparse.Namespace, run_dir: Path) -> int:
    cluster, api = lifecycle.running(run_dir)
    instance = lifecycle.instance(cluster, args.id)
    done = "stopped" if lifecycle.stop(api, instance) else "was already stopped"
    console.print(f"{instance.id} ({instance.url}) {done}")
    return 0


def cmd_restart(args: argparse.Namespace, run_dir: Path) -> int:
    cluster, api = lifecycle.running(run_dir)
    lifecycle.stop(api, lifecycle.instance(cluster, args.id))
    return cmd_start(args, run_dir)


def cmd_start(args: argparse.Namespace, run_dir: Path) -> int:
    cluster, api = lifecycle.running(run_dir)
    instance = lifecycle.instance(cluster, args.id)
    try:
        api.startProcess(instance.id, False)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != Faults.ALREADY_STARTED:
            raise
    lifecycle.wait_healthy(run_dir, api, [instance], args.timeout)
    console.print(f"{instance.id} is healthy at {instance.url}")
    return 0


def cmd_scale(args: argparse.Namespace, run_dir: Path) -> int:
    if args.n < 1:
        raise ClusterError(
            f"a cluster needs at least one instance (got {args.n}); use `llmsim cluster down` to stop it"
        )
    cluster, api = lifecycle.running(run_dir)
    lifecycle.check_range(cluster.base_port, args.n)
    before = cluster.size
    cluster.size = args.n
    if args.n < before:
        state.save(run_dir, cluster)  # readers stop expecting the removed ones first
        lifecycle.apply(run_dir, api, cluster)
    elif args.n > before:
        added = cluster.instances[before:]
        lifecycle.check_free(added)
        lifecycle.apply(run_dir, api, cluster)
        try:
            lifecycle.wait_healthy(run_dir, api, added, args.timeout)
        except BaseException:
            cluster.size = before
            lifecycle.apply(run_dir, api, cluster)
            raise
        state.save(run_dir, cluster)
    console.print(f"scaled {cluster.name!r} from {before} to {args.n} instances")
    console.print(_show(cluster, api, run_dir))
    return 0


def cmd_logs(args: argparse.Namespace, run_dir: Path) -> int:
    cluster = state.load(run_dir)
    if cluster is not None:
        lifecycle.instance(cluster, args.id)
    path = supervisor.log_path(run_dir, args.id)
    if not path.exists():
        raise ClusterError(f"no log for {args.id!r} in {path.parent}")
    with path.open("rb") as log:
        sys.stdout.write(b"".join(log.readlines()[-args.lines :]).decode(errors="replace"))
        sys.stdout.flush()
        if not args.follow:
            return 0
        try:
            while True:
                chunk = log.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                elif path.stat().st_size < log.tell():  # rotated or truncated
                    log.seek(0)
                else:
                    time.sleep(0.25)
        except KeyboardInterrupt:
            return 0


def _targets(cluster: Cluster, instance_id: str) -> list[Instance]:
    return cluster.instances if instance_id == "all" else [lifecycle.instance(cluster, instance_id)]


def _configure(
    run_dir: Path,
    instance_id: str,
    patch: dict[str, Any],
    describe: Callable[[dict[str, Any]], str],
    what: str,
) -> int:
    """PATCH each target with ``patch``; one line per instance changed, one per failure.

    A 400 stops at once (the same change would be refused everywhere); an instance that does not
    answer is reported and the others are still changed. Exit status 1 if anything failed.
    """
    cluster, _api = lifecycle.running(run_dir)
    targets = _targets(cluster, instance_id)
    token = control.admin_token(run_dir, cluster)
    failed = 0
    for instance in targets:
        try:
            config = control.patch_config(instance, patch, token)
        except control.ControlError as exc:
            print(f"llmsim cluster: {exc}", file=sys.stderr)
            failed += 1
            if exc.status == 400:
                break
            continue
        console.print(f"{instance.id} {instance.url} {what}: {describe(config)}", highlight=False)
    return 1 if failed else 0


# What `fault … --clear` and `latency … --clear` send an instance.
CLEAR_FAULTS: dict[str, Any] = {"failure_rate": 0.0, "fail_first": 0}
CLEAR_LATENCY: dict[str, Any] = {
    "prefill_overhead": 0.0,
    "prefill_overhead_stddev": 0.0,
    "itl": 0.0,
    "itl_stddev": 0.0,
    "profile": None,
}


def cmd_fault(args: argparse.Namespace, run_dir: Path) -> int:
    if args.clear:
        if args.types is not None or args.rate is not None or args.fail_first is not None:
            raise ClusterError("--clear takes no other fault flags")
        patch: dict[str, Any] = dict(CLEAR_FAULTS)
    else:
        if args.types is None and args.rate is None and args.fail_first is None:
            raise ClusterError("say which fault: --type TYPE [--rate R] [--fail-first N], or --clear")
        patch = {}
        if args.types is not None:
            patch["failure_types"] = args.types
        rate = args.rate
        if rate is None and args.types is not None and args.fail_first is None:
            rate = 1.0  # `fault sim-2 --type server_error`: every request fails
        if rate is not None:
            patch["failure_rate"] = rate
        if args.fail_first is not None:
            patch["fail_first"] = args.fail_first  # the instance starts counting again on every PATCH
    return _configure(run_dir, args.id, patch, control.faults_from_config, "faults")


def cmd_latency(args: argparse.Namespace, run_dir: Path) -> int:
    given = args.ttft_ms is not None or args.itl_ms is not None
    if args.clear:
        if given or args.profile is not None:
            raise ClusterError("--clear takes no other latency flags")
        patch: dict[str, Any] = dict(CLEAR_LATENCY)
    elif args.profile is not None:
        if given:
            raise ClusterError("--profile replaces --ttft-ms and --itl-ms; give one or the other")
        patch = {"profile": args.profile}
    elif given:
        patch = {"profile": None}  # a profile would override the flat numbers
        if args.ttft_ms is not None:
            patch["prefill_overhead"] = args.ttft_ms
        if args.itl_ms is not None:
            patch["itl"] = args.itl_ms
    else:
        raise ClusterError("say which latency: --ttft-ms MS [--itl-ms MS], --profile NAME, or --clear")
    return _configure(run_dir, args.id, patch, control.latency_from_config, "latency")


def cmd_down(args: argparse.Namespace, run_dir: Path) -> int:
    """Also stops what a dead supervisord left running, and clears the files it left."""
    api = supervisor.running(run_dir)
    try:
        cluster = state.load(run_dir)
    except ClusterError:
        cluster = None  # a broken cluster.json must not keep anyone from stopping the processes
    name = cluster.name if cluster else args.name
    logs = f"logs kept in {run_dir / supervisor.LOGS}"
    if api is not None or supervisor.daemon(run_dir) is not None:
        lifecycle.shutdown(run_dir, api, cluster)
        console.print(f"cluster {name!r} stopped; {logs}", soft_wrap=True)
        return 0
    left = lifecycle.leftovers(run_dir)
    if not left and not supervisor.traces(run_dir):
        raise lifecycle.nothing_here(run_dir)
    pid = supervisor.recorded_pid(run_dir)
    its = f"its supervisord (pid {pid})" if pid else "its supervisord"
    lifecycle.shutdown(run_dir, None, cluster)
    if left:
        what = (
            f"cluster {name!r} had lost {its}; stopped the instances left running: {lifecycle.listing(left)}"
        )
    else:
        what = (
            f"cluster {name!r} was not running: {its} had died, and its instances with it; cleared {run_dir}"
        )
    console.print(f"{what}; {logs}", soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=state.DEFAULT_NAME, help="cluster name (default %(default)s)")
    common.add_argument(
        "--run-dir",
        help="where config, socket, logs and cluster.json live [env LLMSIM_RUN_DIR; default ./.llmsim/NAME]",
    )
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for health (default %(default)s)"
    )

    parser = argparse.ArgumentParser(
        prog="llmsim cluster", description="Run N llmsim instances on this machine under supervisord."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], summary: str, *parents: argparse.ArgumentParser):
        sub = commands.add_parser(name, help=summary, description=summary, parents=[common, *parents])
        sub.set_defaults(handler=handler)
        return sub

    up = add(
        "up", cmd_up, "start N instances and wait until all are healthy (extra serve flags after --)", timeout
    )
    up.add_argument("-n", type=int, default=3, help="number of instances (default %(default)s)")
    up.add_argument(
        "--base-port", type=int, default=8001, help="port of the first instance (default %(default)s)"
    )
    up.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    up.add_argument(
        "--id-prefix", default="sim-", help="instance IDs are PREFIX1..PREFIXN (default %(default)s)"
    )
    up.add_argument(
        "--foreground", action="store_true", help="keep a live status table; Ctrl-C stops the cluster"
    )
    st = add("status", cmd_status, "one row per instance: state, health, uptime, requests, memory")
    st.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    st.add_argument("--json", action="store_true", help="machine-readable output with the same fields")
    for name, handler, summary in (
        ("stop", cmd_stop, "stop one instance (its port then refuses connections)"),
        ("start", cmd_start, "start a stopped instance and wait until it is healthy"),
        ("restart", cmd_restart, "stop then start one instance"),
    ):
        add(name, handler, summary, timeout).add_argument("id", help="instance ID, e.g. sim-2")
    add("scale", cmd_scale, "add or remove instances while the others keep serving", timeout).add_argument(
        "n", type=int, help="new number of instances"
    )
    logs = add("logs", cmd_logs, "print an instance's log")
    logs.add_argument("id", help="instance ID, e.g. sim-2")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default %(default)s)")
    fault = add(
        "fault", cmd_fault, "inject errors on one instance (or all): they apply to new requests at once"
    )
    fault.add_argument("id", help="instance ID, e.g. sim-2, or all")
    fault.add_argument(
        "--type",
        "--types",
        dest="types",
        metavar="TYPES",
        help=f"fault type, or a comma list to pick from: {', '.join(FaultType.__members__)} "
        f"(the instance's default: {','.join(control.DEFAULT_FAULT_TYPES)})",
    )
    fault.add_argument(
        "--rate",
        type=float,
        help="fraction of requests that fail, 0..1 (default 1.0 when --type comes alone)",
    )
    fault.add_argument("--fail-first", type=int, metavar="N", help="the next N requests fail, then none")
    fault.add_argument("--clear", action="store_true", help="no more faults: rate 0, fail-first 0")
    lat = add("latency", cmd_latency, "slow one instance (or all) down: applies to new requests at once")
    lat.add_argument("id", help="instance ID, e.g. sim-1, or all")
    lat.add_argument("--ttft-ms", type=float, metavar="MS", help="time to first token, ms")
    lat.add_argument("--itl-ms", type=float, metavar="MS", help="inter-token latency while streaming, ms")
    lat.add_argument("--profile", metavar="NAME", help="a named latency profile instead (e.g. gpt-4o)")
    lat.add_argument("--clear", action="store_true", help="instant again: TTFT and ITL 0, no profile")
    add("down", cmd_down, "stop every instance and supervisord; keep the logs")
    return parser


def main(argv: list[str]) -> int:
    argv = list(argv)
    serve_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, serve_args = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if serve_args and args.command != "up":
        parser.error("flags after -- are passed to `llmsim serve` and only make sense with `up`")
    args.serve_args = serve_args
    run_dir: Path | str = args.run_dir or os.environ.get("LLMSIM_RUN_DIR") or "?"  # for messages until known
    try:
        run_dir = state.run_dir(args.name, args.run_dir)
        return args.handler(args, run_dir)
    except ClusterError as exc:
        print(f"llmsim cluster: {exc}", file=sys.stderr)
    except xmlrpc.client.Fault as fault:
        print(f"llmsim cluster: supervisord refused: {fault.faultString}", file=sys.stderr)
    except BrokenPipeError:
        # Whoever read our output stopped early (`| head`): not supervisord's fault, not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - whatever it is, one sentence and status 1, no traceback
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        print(f"llmsim cluster: {type(exc).__name__}: {why} (run dir {run_dir})", file=sys.stderr)
    return 1
