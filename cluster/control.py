"""Talk to one instance's control API (/llmsim/config, /llmsim/stats) for `cluster fault|latency|status`.

stdlib http.client, as in ``status``: the CLI needs no HTTP dependency and ignores proxies. Every
failure becomes a :class:`ControlError` that names the instance in one sentence.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

from llmsim.faults import DEFAULT_TYPES
from llmsim.settings import config_file, read_file
from llmsim_cluster import ClusterError, serve, supervisor
from llmsim_cluster.state import Cluster, Instance

TIMEOUT_S = 5.0
TOKEN_ENV = serve.env_name(serve.ADMIN_TOKEN)
DEFAULT_FAULT_TYPES = tuple(t.value for t in DEFAULT_TYPES)  # what the server injects without failure_types


class ControlError(ClusterError):
    """The instance could not be reached, or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def admin_token(run_dir: Path, cluster: Cluster | None) -> str | None:
    """The admin token the instances run with; None if there is none to be found.

    `up` passes a token in supervisord's environment, which the instances inherit, and writes it
    nowhere; so it is read back from there (supervisord's, else a surviving instance's: our own
    processes, whose environment only our user can read). Else ``--admin-token-file`` (in the
    serve flags or that environment), else the ``--config`` file's ``admin_token`` or
    ``admin_token_file`` (read as the server reads it), else ``$LLMSIM_ADMIN_TOKEN`` here.
    """
    pid = supervisor.daemon(run_dir) or next(iter(supervisor.members(run_dir)), None)
    env = supervisor.environ(pid) if pid else {}
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    workdir = Path(cluster.workdir if cluster else ".")
    path = env.get(serve.env_name(serve.ADMIN_TOKEN_FILE))
    if cluster:  # a flag wins over the environment, as in `llmsim serve`
        path = serve.extract(cluster.serve_args, {serve.ADMIN_TOKEN_FILE})[1].get(
            serve.ADMIN_TOKEN_FILE, path
        )
    config = _config_path(cluster.serve_args if cluster else [], env)
    if config and not path:
        with contextlib.suppress(ValueError, OSError):  # the server reports a bad file itself
            data = config_file(str(workdir / config))
            if isinstance(data.get(serve.ADMIN_TOKEN), str) and data[serve.ADMIN_TOKEN]:
                return data[serve.ADMIN_TOKEN]
            path = data.get(serve.ADMIN_TOKEN_FILE) or None
    if path:
        with contextlib.suppress(ValueError, OSError):  # unreadable here: the instance will say 401
            return read_file(workdir / path, "admin token file", limit=4096).strip()
    return os.environ.get(TOKEN_ENV) or None


def _config_path(serve_args: list[str], env: dict[str, str]) -> str | None:
    """``--config FILE`` among the serve flags (``--config=FILE`` too), else ``$LLMSIM_CONFIG``."""
    for i, arg in enumerate(serve_args):
        if arg == "--config" and i + 1 < len(serve_args):
            return serve_args[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return env.get(serve.env_name("config"))


def connected_to_itself(sock: socket.socket) -> bool:
    """A connect to a local port nobody listens on can pick that same port as its source (TCP
    simultaneous open, when the port is in the ephemeral range): the socket then talks to itself."""
    try:
        return sock.getsockname() == sock.getpeername()
    except OSError:
        return False


def request(
    instance: Instance,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = TIMEOUT_S,
) -> tuple[int, Any]:
    """(status, decoded JSON body or None). Raises OSError / HTTPException on transport errors."""
    headers = {"accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(instance.host, instance.port, timeout=timeout)
    try:
        conn.connect()
        if conn.sock is not None and connected_to_itself(conn.sock):
            raise ConnectionRefusedError(f"nothing listens on port {instance.port} (connected to itself)")
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    return response.status, data


def _error_message(data: Any) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"]).rstrip(".")
    return "no error message"


def call(instance: Instance, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """The JSON answer of a 200, else a ControlError that says what went wrong and what to do."""
    where = f"{instance.id} ({instance.url})"
    try:
        status, data = request(instance, method, path, body, token)
    except ConnectionRefusedError:
        raise ControlError(
            f"{where} refuses connections; is it stopped? (`llmsim cluster start {instance.id}`)"
        ) from None
    except TimeoutError:
        raise ControlError(f"{where} did not answer {method} {path} within {TIMEOUT_S:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControlError(f"{where} could not be reached: {exc or type(exc).__name__}") from None
    if status == 200:
        return data
    if status == 401:
        hint = (
            "the token from cluster.json or $LLMSIM_ADMIN_TOKEN was refused"
            if token
            else f"set ${TOKEN_ENV} to the token the cluster was started with"
        )
        raise ControlError(f"{where} wants an admin token for {path}: {hint}", status)
    if status == 403:
        raise ControlError(f"{where} refused {path}: {_error_message(data)}", status)
    if status in (404, 405):
        raise ControlError(f"{where} has no {method} {path} (an llmsim without the control API?)", status)
    if status == 400:
        raise ControlError(f"{where} rejected the change: {_error_message(data)}", status)
    raise ControlError(f"{where} answered {method} {path} with HTTP {status}: {_error_message(data)}", status)


def patch_config(instance: Instance, patch: dict[str, Any], token: str | None) -> dict[str, Any]:
    """PATCH /llmsim/config; the instance's new config."""
    return call(instance, "PATCH", "/llmsim/config", patch, token)


# --- one-line descriptions, shared by `fault`, `latency` and the status table ---------------------


def _pct(rate: float) -> str:
    return f"{rate * 100:.4g}%"


def describe_faults(rate: float, types: list[str] | None, first_left: int) -> str:
    """``server_error 100%``, ``rate_limit,timeout 50% first 3``, ``server_error first 3`` or ``-``."""
    if not rate and not first_left:
        return "-"
    parts = [",".join(types or DEFAULT_FAULT_TYPES)]
    if rate:
        parts.append(_pct(rate))
    if first_left:
        parts.append(f"first {first_left}")
    return " ".join(parts)


def describe_latency(profile: str | None, ttft_ms: float, itl_ms: float) -> str:
    """``profile gpt-4o``, ``ttft 2000ms itl 20ms``, ``ttft 300ms`` or ``-``."""
    if profile:
        return f"profile {profile}"
    parts = [f"{name} {value:g}ms" for name, value in (("ttft", ttft_ms), ("itl", itl_ms)) if value]
    return " ".join(parts) or "-"


def faults_from_config(config: dict[str, Any]) -> str:
    types = [t.strip() for t in (config.get("failure_types") or "").split(",") if t.strip()]
    return describe_faults(config.get("failure_rate") or 0.0, types, config.get("fail_first") or 0)


def latency_from_config(config: dict[str, Any]) -> str:
    return describe_latency(
        config.get("profile"), config.get("prefill_overhead") or 0.0, config.get("itl") or 0.0
    )


def faults_from_stats(active: dict[str, Any]) -> str:
    """From /llmsim/stats ``active.faults`` (FaultPolicy.snapshot)."""
    return describe_faults(
        active.get("failure_rate") or 0.0,
        list(active.get("failure_types") or []),
        active.get("fail_first_remaining") or 0,
    )


def latency_from_stats(active: dict[str, Any]) -> str:
    """From /llmsim/stats ``active.latency``."""
    return describe_latency(
        active.get("profile"), active.get("prefill_overhead_ms") or 0.0, active.get("itl_ms") or 0.0
    )
