"""A real nginx in front of llmsim instances, configured under a temp dir by the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.servers import free_port, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

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
    conf = root / "nginx.conf"
    conf.write_text(text)
    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or httpx.get(f"{url}/nginx-probe", timeout=1).status_code,
            what="nginx",
        )
        if process.poll() is not None:
            raise RuntimeError(f"nginx failed: {process.stdout.read().decode() if process.stdout else ''}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
