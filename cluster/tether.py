"""``python -m llmsim_cluster.tether PIDFILE COMMAND...``: exec COMMAND so that it dies with supervisord.

supervisord forks and execs each instance itself, so there is no hook to run code in the child
before exec; this module is that hook. On Linux it asks the kernel for SIGTERM when the parent
dies (``prctl(PR_SET_PDEATHSIG)``, kept across exec), checks the parent is still the supervisord
named in PIDFILE (it may have died before the prctl), then execs COMMAND in its place: no extra
process, no polling, and the PID supervisord tracks is the instance's. Elsewhere it only execs;
``llmsim cluster status`` and ``down`` still find instances that outlive their supervisord.

Kept free of imports beyond the stdlib: it runs once per instance start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tie_to_parent(pidfile: str) -> bool:
    """Ask for SIGTERM when supervisord dies; False if it is gone already (so do not start)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return True  # refused (unusual): run untethered rather than not at all
    except (OSError, AttributeError):
        return True
    try:
        with open(pidfile) as file:
            supervisord = int(file.read().strip())
    except (OSError, ValueError):
        return True  # no pidfile to compare with: trust the prctl
    return os.getppid() == supervisord


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m llmsim_cluster.tether PIDFILE COMMAND [ARG...]")
    pidfile, command = argv[0], argv[1:]
    if not tie_to_parent(pidfile):
        sys.exit(f"supervisord (pidfile {pidfile}) is gone; not starting {command[0]}")
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
