"""A real haproxy in front of llmsim instances, from the README's recipe ``compose/local/haproxy.cfg``.

:func:`config` turns the recipe (written for ``make cluster``'s 127.0.0.1:8001..) into a config for
the given instance ports and listen port, with or without its retry lines; :func:`run_haproxy`
starts haproxy with it under the test's temp dir and stops it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, gateway

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
RECIPE = Path(__file__).resolve().parent.parent / "compose" / "local" / "haproxy.cfg"
RETRY_LINES = ("retry-on ", "retries ", "option redispatch")  # dropped by retries=False
_SERVER = re.compile(r"^(\s*server )sim-\d+ 127\.0\.0\.1:\d+(.*)$")
_BIND = "bind 127.0.0.1:8081"


def version() -> str:
    out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, check=True).stdout
    return out.split()[2] if out.startswith("HAProxy version") else out.splitlines()[0]


def config(ports: Sequence[int], port: int, retries: bool = True, recipe: Path = RECIPE) -> str:
    """The recipe with one ``server sim-N 127.0.0.1:PORT`` line per instance port (in place of its
    own, the first one as the template), bound to ``port``; ``retries=False`` drops its
    ``retry-on``, ``retries`` and ``option redispatch`` lines."""
    lines = recipe.read_text().splitlines()
    at = next((i for i, line in enumerate(lines) if _SERVER.match(line)), None)
    if at is None or sum(_BIND in line for line in lines) != 1:
        raise ValueError(f"{recipe}: no `server sim-1 127.0.0.1:8001` line or not one `{_BIND}`")
    head, tail = _SERVER.match(lines[at]).groups()
    servers = [f"{head}sim-{i} 127.0.0.1:{p}{tail}" for i, p in enumerate(ports, 1)]
    lines = (
        [line for line in lines[:at] if not _SERVER.match(line)]
        + servers
        + [line for line in lines[at:] if not _SERVER.match(line)]
    )
    lines = [line.replace(_BIND, f"bind 127.0.0.1:{port}") for line in lines]
    if not retries:
        kept = [line for line in lines if not line.strip().startswith(RETRY_LINES)]
        if len(kept) != len(lines) - len(RETRY_LINES):
            raise ValueError(f"{recipe}: expected one line each starting with {RETRY_LINES}")
        lines = kept
    return "\n".join(lines) + "\n"


@contextmanager
def run_haproxy(
    tmp_path: Path, ports: Sequence[int], retries: bool = True, text: str | None = None
) -> Iterator[str]:
    """Start haproxy on 127.0.0.1 in front of the instances on ``ports`` (or with the whole config
    ``text``, whose ``{port}`` is filled in); yield its base URL once it answers; stop it."""
    port = free_port()
    root = tmp_path / f"haproxy-{port}"  # a dir of its own: several may run side by side
    root.mkdir()
    conf = root / "haproxy.cfg"
    conf.write_text(text.replace("{port}", str(port)) if text else config(ports, port, retries))
    subprocess.run([HAPROXY, "-c", "-q", "-f", str(conf)], check=True, capture_output=True)
    # -db: stay in the foreground, so terminate() stops it (no pid file, no daemon).
    with gateway([HAPROXY, "-db", "-f", str(conf)], root / "haproxy.log", port, "haproxy") as url:
        yield url
