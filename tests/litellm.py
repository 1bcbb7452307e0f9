"""A real LiteLLM proxy in front of llmsim instances, from a venv of its own.

The venv (``litellm[proxy]`` pinned to :data:`VERSION`) is created once and reused across runs:
under ``$LLMSIM_LITELLM_VENV``, else ``~/.cache/llmsim-tests/litellm-<VERSION>``. A venv whose
install did not finish (no stamp file) is made again. ``python -m tests.litellm --prepare`` creates
it ahead of the tests (``.ci/run`` does, so ``make test`` only reuses it); ``--print-config`` shows
what the tests run for given ports.

The proxy's config is ``compose/local/litellm.yaml`` (the README's recipe, written for ``make
cluster``'s 127.0.0.1:8001..), with one deployment per instance port and the router settings the
test asks for. It runs with LiteLLM's bundled model cost map and without telemetry: it needs no
network but the instances' (it runs in a sandbox without any).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_port, stop, wait_until

VERSION = "1.108.7"  # 1.108.8+, 1.109, 1.110 pin litellm-enterprise/-proxy-extras builds the index lacks
REQUIREMENT = f"litellm[proxy]=={VERSION}"
CONFIG = Path(__file__).resolve().parent.parent / "compose" / "local" / "litellm.yaml"
STAMP = ".llmsim-installed"  # written once pip has installed and the proxy imports
INSTALLING = ".llmsim-installing"  # there while prepare() installs: such a venv may be deleted
STARTUP_TIMEOUT = 120.0  # seconds; a cold start on a 2-core machine takes ~10-20 s
# Where the proxy's runtime would otherwise reach out: the model cost map, telemetry, update checks.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def venv_dir() -> Path:
    configured = os.environ.get("LLMSIM_LITELLM_VENV")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "llmsim-tests" / f"litellm-{VERSION}"


def _ready(venv: Path) -> bool:
    return (venv / STAMP).is_file() and (venv / "bin" / "litellm").is_file()


def prepare(venv: Path | None = None, quiet: bool = True) -> Path:
    """The venv's ``litellm`` executable, installing it first unless a finished install is there.

    A venv this function did not make (``$LLMSIM_LITELLM_VENV`` pointing at one of yours) is used
    as it is when it has ``bin/litellm``, and never deleted; one it left half-made is made again.
    A lock file next to the venv keeps two test runs from installing at once.
    """
    venv = venv or venv_dir()
    if _ready(venv):
        return venv / "bin" / "litellm"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(venv):
            return venv / "bin" / "litellm"
        if venv.exists() and not (venv / INSTALLING).exists():
            if (venv / "bin" / "litellm").is_file():
                return venv / "bin" / "litellm"
            raise RuntimeError(f"{venv} exists but has no bin/litellm; remove it or set LLMSIM_LITELLM_VENV")
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / INSTALLING).touch()
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if quiet:
            pip.append("--quiet")
        subprocess.run([*pip, REQUIREMENT], check=True)
        # Import the proxy once: a broken install fails here, not in the middle of a test.
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import litellm.proxy.proxy_server"],
            check=True,
            env={**os.environ, **OFFLINE_ENV},
            stdout=subprocess.DEVNULL,
        )
        (venv / STAMP).write_text(f"{REQUIREMENT}\ninstalled in {time.monotonic() - started:.0f} s\n")
        (venv / INSTALLING).unlink()
    return venv / "bin" / "litellm"


def installed_version(venv: Path | None = None) -> str:
    """The version of litellm in the venv, from its metadata (without importing it)."""
    venv = venv or venv_dir()
    for meta in (venv / "lib").glob("python*/site-packages/litellm-*.dist-info/METADATA"):
        for line in meta.read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return "not installed"


def config(
    ports: Sequence[int],
    num_retries: int = 2,
    allowed_fails: int | None = None,
    cooldown_time: float | None = None,
    master_key: str | None = None,
    source: Path = CONFIG,
) -> dict[str, Any]:
    """The recipe's config with one deployment per port (the first deployment is the template),
    ``num_retries`` and, when given, ``allowed_fails``/``cooldown_time``/``master_key``."""
    data = yaml.safe_load(source.read_text())
    template = data["model_list"][0]
    deployments = []
    for port in ports:
        deployment = copy.deepcopy(template)
        deployment["litellm_params"]["api_base"] = f"http://127.0.0.1:{port}/v1"
        deployments.append(deployment)
    data["model_list"] = deployments
    router = data.setdefault("router_settings", {})
    router["num_retries"] = num_retries
    if allowed_fails is not None:
        router["allowed_fails"] = allowed_fails
    if cooldown_time is not None:
        router["cooldown_time"] = cooldown_time
    if master_key is not None:
        data.setdefault("general_settings", {})["master_key"] = master_key
    return data


@dataclass
class Proxy:
    url: str
    port: int
    master_key: str
    version: str
    startup_s: float
    config: dict[str, Any]
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.master_key}"}

    @property
    def model(self) -> str:
        return self.config["model_list"][0]["model_name"]


@contextmanager
def run_litellm(
    tmp_path: Path, ports: Sequence[int], venv: Path | None = None, name: str = "litellm", **settings: Any
) -> Iterator[Proxy]:
    """Start a LiteLLM proxy on 127.0.0.1 in front of the llmsim instances on ``ports`` (keyword
    arguments as for :func:`config`); yield it once ``/health/liveliness`` answers; stop it."""
    with run_litellms(tmp_path, ports, {name: settings}, venv) as proxies:
        yield proxies[name]


@contextmanager
def run_litellms(
    tmp_path: Path, ports: Sequence[int], variants: dict[str, dict[str, Any]], venv: Path | None = None
) -> Iterator[dict[str, Proxy]]:
    """Several proxies at once (name -> settings for :func:`config`), started side by side.
    Yields name -> Proxy once all answer."""
    with start_litellms(tmp_path, ports, variants, venv) as ready:
        yield ready()


@contextmanager
def start_litellms(
    tmp_path: Path, ports: Sequence[int], variants: dict[str, dict[str, Any]], venv: Path | None = None
) -> Iterator[Callable[[], dict[str, Proxy]]]:
    """Launch the proxies and yield at once a ``ready()`` that waits until they all answer (polling
    ``/health/liveliness``) and returns name -> Proxy, the same each call. A start takes 10-20 s
    of Python imports: launch early, do other work, call ``ready()`` when a proxy is needed."""
    executable = prepare(venv)
    version = installed_version(venv)
    env = {**os.environ, **OFFLINE_ENV}
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DATABASE_URL", "LITELLM_MASTER_KEY"):
        env.pop(var, None)  # the config alone decides
    started = time.monotonic()
    running: list[tuple[str, subprocess.Popen, Path, int, dict[str, Any]]] = []
    proxies: dict[str, Proxy] = {}

    def ready() -> dict[str, Proxy]:
        for name, process, log, port, data in running:
            if name in proxies:
                continue
            url = f"http://127.0.0.1:{port}"
            wait_until(
                lambda url=url, process=process: (
                    process.poll() is not None
                    or httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200
                ),
                timeout=STARTUP_TIMEOUT,
                interval=0.2,
                what=f"the LiteLLM proxy {name}",
            )
            if process.poll() is not None:
                raise RuntimeError(f"litellm exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            proxies[name] = Proxy(
                url=url,
                port=port,
                master_key=data["general_settings"]["master_key"],
                version=version,
                startup_s=time.monotonic() - started,
                config=data,
                log=log,
            )
        return proxies

    try:
        for name, settings in variants.items():
            data = config(ports, **settings)
            root = tmp_path / name
            root.mkdir(exist_ok=True)
            conf = root / "config.yaml"
            conf.write_text(yaml.safe_dump(data, sort_keys=False))
            log = root / "litellm.log"
            port = free_port()
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [str(executable), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    cwd=root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running.append((name, process, log, port, data))
        yield ready
    finally:
        for _, process, *_ in running:
            process.terminate()  # all at once: each takes seconds to stop
        for _, process, *_ in running:
            stop(process, timeout=15)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.litellm", description=__doc__.split("\n")[0])
    parser.add_argument("--prepare", action="store_true", help="create the LiteLLM venv unless it is there")
    parser.add_argument("--print-config", metavar="PORT", type=int, nargs="*", help="the config for ports")
    args = parser.parse_args(argv)
    if args.prepare:
        started = time.monotonic()
        fresh = not _ready(venv_dir())
        prepare(quiet=True)
        what = "installed" if fresh else "reused"
        print(f"litellm {installed_version()} {what} in {venv_dir()} ({time.monotonic() - started:.0f} s)")
    if args.print_config is not None:
        print(yaml.safe_dump(config(args.print_config or [8001, 8002, 8003]), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
