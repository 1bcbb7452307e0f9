"""A real nginx in front of llmsim instances, configured under a temp dir by the test.

Two ways: :func:`run_nginx` with an upstream block (or a whole config template) of the test's own,
or :func:`run_recipe` with the README's recipe ``compose/local/nginx.conf`` (written for ``make
cluster``'s 127.0.0.1:8001..), turned by :func:`config` into one for the given ports, with or
without its retry lines (``proxy_next_upstream ... non_idempotent``, ``proxy_next_upstream_tries``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, gateway

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RECIPE = Path(__file__).resolve().parent.parent / "compose" / "local" / "nginx.conf"
RETRY_LINES = ("proxy_next_upstream ", "proxy_next_upstream_tries ")  # one each in the recipe
NO_RETRIES = "proxy_next_upstream off;"  # what retries=False puts in their place
_SERVER = re.compile(r"^(\s*server )127\.0\.0\.1:\d+(.*)$")
_LISTEN = "listen 127.0.0.1:8080;"

# Everything nginx needs around an http block's contents, with every path under the test's temp
# dir ({root}); {user} is `user root root;` when the tests run as root. `%s` is the block's body.
WRAPPER = """
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
%s
}}
"""

TEMPLATE = (
    WRAPPER
    % """
    upstream llmsim {{
{upstream}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://llmsim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            {extra}
        }}
    }}
"""
)


def upstream(ports: list[int], weights: dict[int, int] | None = None, policy: str = "") -> str:
    lines = [f"        {policy};"] if policy else []
    for port in ports:
        weight = f" weight={weights[port]}" if weights and port in weights else ""
        lines.append(f"        server 127.0.0.1:{port}{weight} max_fails=0;")
    return "\n".join(lines)


def version() -> str:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    return out.strip().rsplit("/", 1)[-1]


def config(
    ports: Sequence[int],
    port: int,
    retries: bool = True,
    next_upstream: str | None = None,
    recipe: Path = RECIPE,
) -> str:
    """The recipe with one ``server 127.0.0.1:PORT`` line per instance port (in place of its own,
    the first one as the template), listening on ``port``; ``retries=False`` puts
    ``proxy_next_upstream off;`` in place of its two retry lines; ``next_upstream`` replaces the
    conditions of its ``proxy_next_upstream`` (e.g. without ``non_idempotent``)."""
    lines = recipe.read_text().splitlines()
    at = next((i for i, line in enumerate(lines) if _SERVER.match(line)), None)
    if at is None or sum(_LISTEN in line for line in lines) != 1:
        raise ValueError(f"{recipe}: no `server 127.0.0.1:8001` line or not one `{_LISTEN}`")
    head, tail = _SERVER.match(lines[at]).groups()
    servers = [f"{head}127.0.0.1:{p}{tail}" for p in ports]
    lines = (
        [line for line in lines[:at] if not _SERVER.match(line)]
        + servers
        + [line for line in lines[at:] if not _SERVER.match(line)]
    )
    lines = [line.replace(_LISTEN, f"listen 127.0.0.1:{port};") for line in lines]
    at = [i for i, line in enumerate(lines) if line.strip().startswith(RETRY_LINES)]
    if len(at) != len(RETRY_LINES):
        raise ValueError(f"{recipe}: expected one line each starting with {RETRY_LINES}")
    indent = lines[at[0]][: len(lines[at[0]]) - len(lines[at[0]].lstrip())]
    if not retries:
        lines = [
            indent + NO_RETRIES if i == at[0] else line for i, line in enumerate(lines) if i not in at[1:]
        ]
    elif next_upstream is not None:
        lines[at[0]] = f"{indent}{RETRY_LINES[0]}{next_upstream};"
    return "\n".join(lines) + "\n"


@contextmanager
def run_recipe(
    tmp_path: Path, ports: Sequence[int], retries: bool = True, next_upstream: str | None = None
) -> Iterator[str]:
    """Start nginx with the README's recipe in front of the instances on ``ports`` (the other
    arguments as for :func:`config`); yield its base URL; stop it."""
    port = free_port()
    root = tmp_path / f"nginx-{port}"  # a dir of its own: several may run side by side
    root.mkdir()
    text = config(ports, port, retries, next_upstream)
    if os.geteuid() == 0:
        text = "user root root;\n" + text  # workers as root, so they can use the temp dir
    with _start(root, text, port) as url:
        yield url


@contextmanager
def run_nginx(
    tmp_path: Path, upstream_block: str, extra: str = "", config: str | None = None
) -> Iterator[str]:
    """Start nginx with the given upstream (or a whole config text with {root} and {port} left to
    fill); yield its base URL; stop it."""
    root = tmp_path / "nginx"
    root.mkdir(exist_ok=True)
    port = free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    text = (config or TEMPLATE).format(root=root, port=port, upstream=upstream_block, extra=extra, user=user)
    with _start(root, text, port) as url:
        yield url


@contextmanager
def _start(root: Path, text: str, port: int) -> Iterator[str]:
    conf = root / "nginx.conf"
    conf.write_text(text)
    with gateway(
        [NGINX, "-p", str(root), "-c", str(conf), "-g", "daemon off;"], root / "nginx.log", port, "nginx"
    ) as url:
        yield url
