"""Concurrency and queueing, as a model server does it.

At most ``max_running`` sequences generate at once (vLLM's max-num-seqs); later requests wait in
a FIFO queue of at most ``max_queue``; past that they are rejected at once, as an overloaded
provider does. A finished sequence hands its slot straight to the oldest waiter.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from llmsim.errors import APIError, Kind


class Scheduler:
    def __init__(
        self, max_running: int, max_queue: int | None, full_status: int = 429, retry_after: float = 1.0
    ) -> None:
        self.max_running = max_running  # 0: unlimited
        self.max_queue = max_queue  # None: unlimited
        self.full_status = full_status
        self.retry_after = retry_after  # seconds a rejected client is told to wait
        self.running = 0
        # FIFO of waiters; a dict, so one that leaves is removed in O(1).
        self._queue: OrderedDict[asyncio.Future[None], None] = OrderedDict()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def load(self) -> float:
        """Running sequences as a fraction of capacity (0 when unlimited)."""
        return self.running / self.max_running if self.max_running else 0.0

    def try_acquire(self) -> bool:
        """Take a slot if one is free now, without waiting (the common case on an idle server)."""
        if self.max_running and (self.running >= self.max_running or self._queue):
            return False
        self.running += 1
        return True

    def enqueue(self) -> asyncio.Future[None]:
        """A place in the queue, resolved when :meth:`release` hands this waiter its slot (then
        ``running`` already counts it); raises when the queue is full. A waiter that stops
        waiting must call :meth:`abandon`."""
        if self.max_queue is not None and len(self._queue) >= self.max_queue:
            raise self._full()
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue[slot] = None
        return slot

    def abandon(self, slot: asyncio.Future[None]) -> None:
        """The waiter left: give up its queue place, or the slot it was handed meanwhile."""
        if self._queue.pop(slot, False) is None:
            return
        if slot.done() and not slot.cancelled():
            self.release()

    def release(self) -> None:
        while self._queue:
            slot, _ = self._queue.popitem(last=False)
            if not slot.done():
                slot.set_result(None)
                return
        self.running -= 1

    def _full(self) -> APIError:
        if self.full_status == 503:
            return APIError(
                503, kind=Kind.OVERLOADED, data={"code": "overloaded"}, retry_after=self.retry_after
            )
        return APIError(429, kind=Kind.QUEUE_FULL, retry_after=self.retry_after)
