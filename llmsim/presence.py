"""Whether the client is still there, noticed at once during any wait.

Once a request's body is read, the ASGI ``receive()`` returns only when the client disconnects.
One listener per request turns that into a wake-up: a queue wait, a time-to-first-token sleep, a
hang or a token gap ends the moment the client leaves, so its slot and queue place are freed at
once. The listener is started by the first wait, so an instant request never pays for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive


class ClientGone(Exception):
    """The client disconnected; nothing more to send."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Presence:
    __slots__ = ("_receive", "_gone", "_waiter")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone: asyncio.Future[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None

    def _watch(self) -> asyncio.Future[Any]:
        if self._gone is None:
            self._gone = asyncio.ensure_future(self._receive())
            self._gone.add_done_callback(self._wake)
        return self._gone

    def _wake(self, _: asyncio.Future[Any]) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async def wait(self, future: asyncio.Future[Any]) -> Any:
        """``await future``, unless the client leaves first: then ``future`` is cancelled and
        :class:`ClientGone` raised."""
        gone = self._watch()
        if gone.done():
            future.cancel()
            raise ClientGone
        self._waiter = future
        try:
            return await future
        except asyncio.CancelledError:
            if gone.done():
                raise ClientGone from None
            raise  # the task itself was cancelled (shutdown)
        finally:
            self._waiter = None

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds (the same timer as ``asyncio.sleep``), or raise ClientGone.

        The per-token wait of every paced stream, so :meth:`wait` is inlined; the timer needs
        cancelling only when the sleep is cut short."""
        gone = self._gone or self._watch()
        if gone.done():
            raise ClientGone
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _resolve, future)
        self._waiter = future
        try:
            await future
        except asyncio.CancelledError:
            handle.cancel()
            if gone.done():
                raise ClientGone from None
            raise
        finally:
            self._waiter = None

    def close(self) -> None:
        """Stop listening, and drop the references (to the server's request cycle, which holds
        the scope, which holds this request's Turn) that would leave a cycle for the GC."""
        gone, self._gone, self._receive = self._gone, None, _closed
        if gone is not None:
            gone.remove_done_callback(self._wake)
            if not gone.done():
                gone.cancel()


async def _closed() -> Any:
    raise RuntimeError("the request is over")
