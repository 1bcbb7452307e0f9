"""Work that must not hold the event loop: a client's megabytes to parse or tokenize, a schema to
generate from, an operator's file to reload.

Daemon threads rather than an executor's: a shutdown never waits for them (their work is
bounded, and a client that left has abandoned the result). At most two run at once; the rest
wait their turn in their own thread, not on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

_WORKERS = threading.BoundedSemaphore(2)


def in_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``function`` in a daemon thread (it cannot hold up a shutdown); the future resolves in
    the loop. A client that leaves abandons the result; the thread finishes its bounded work."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: object, failed: bool) -> None:
        if not future.done():
            future.set_exception(outcome) if failed else future.set_result(outcome)  # type: ignore[arg-type]

    def work() -> None:
        with _WORKERS:
            try:
                outcome, failed = function(*args), False
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting request
                outcome, failed = exc, True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(settle, outcome, failed)

    threading.Thread(target=work, name="llmsim-worker", daemon=True).start()
    return future
