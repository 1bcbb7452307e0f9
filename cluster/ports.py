"""Is a TCP port free, and if not, who holds it (best effort, from /proc)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_LISTEN = "0A"
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel picks outgoing connections' source ports from (Linux; else IANA's).

    A server port in there can be taken by any client in the meantime, and a connect to it while
    nothing listens can reach itself (TCP simultaneous open).
    """
    try:
        low, high = map(int, _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return 49152, 65535
    return low, high


def is_free(host: str, port: int) -> bool:
    """True if a server could bind ``host:port`` now (SO_REUSEADDR, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def owner(port: int) -> str | None:
    """``"pid 123 (python -m http.server)"`` for the process listening on ``port``, if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc") if inodes else ()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
                return f"pid {pid} ({cmdline.decode(errors='replace')[:80]})"
        except OSError:
            continue
    return None


_handed_out: set[int] = set()


def pick_free(count: int = 1) -> int:
    """The first of ``count`` consecutive free loopback ports, none handed out before in this process.

    Chosen below the kernel's ephemeral range (from 20000), never from it: there any outgoing
    connection may take the port before the server binds it, and polling the port before the
    server listens can connect the socket to itself (TCP simultaneous open).
    """
    low, high = ephemeral_range()
    spans = [(20000, low - count), (high + 1, 65536 - count), (1024, 65536 - count)]
    first, last = next((a, b) for a, b in spans if b - a >= 1000)
    for _ in range(1000):
        base = random.randint(first, last)
        run = range(base, base + count)
        if _handed_out.isdisjoint(run) and all(is_free("127.0.0.1", p) for p in run):
            _handed_out.update(run)
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {first}-{last + count - 1}")
