"""uvicorn, with the two limits a simulator under hostile clients needs.

- A read deadline: a connection gets ``read_timeout`` seconds from its first byte (or its
  connection) to deliver a request's headers and body; slow-header and silent connections are
  closed instead of held forever. The timer is armed once per request, like uvicorn's keep-alive.
- A shutdown that always ends: in-flight requests get ``shutdown_timeout`` seconds after SIGTERM,
  then are cancelled; a second SIGTERM (or SIGINT) exits at once.
"""

from __future__ import annotations

import asyncio
import gc
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _Protocol(HttpToolsProtocol):
    read_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # the second signal, whichever it is: stop waiting
            self.force_exit = True
        super().handle_exit(sig, frame)


def run(app: Any, *, read_timeout: float, shutdown_timeout: float, **options: Any) -> None:
    protocol = type("Protocol", (_Protocol,), {"read_timeout": read_timeout})
    config = uvicorn.Config(app, http=protocol, timeout_graceful_shutdown=shutdown_timeout, **options)
    # Everything built so far (modules, FastAPI's routes, pydantic's validators) lives as long as
    # the process: frozen, the collector's full passes no longer walk it, and those passes come
    # more often as the instance keeps state (the journal, stored responses, caches).
    gc.collect()
    gc.freeze()
    _Server(config).run()
