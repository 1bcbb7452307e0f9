"""Concurrency and queueing, as a model server does it.

At most ``max_running`` sequences generate at once (vLLM's max-num-seqs); later requests wait in
a FIFO queue of at most ``max_queue``; past that they are rejected at once, as an overloaded
provider does.
"""

from __future__ import annotations

import asyncio

from llmsim.errors import APIError


class Scheduler:
    def __init__(self, max_running: int, max_queue: int | None, full_status: int = 429) -> None:
        self.max_running = max_running  # 0: unlimited
        self.max_queue = max_queue  # None: unlimited
        self.full_status = full_status
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_running) if max_running else None

    @property
    def load(self) -> float:
        """Running sequences as a fraction of capacity (0 when unlimited)."""
        return self.running / self.max_running if self.max_running else 0.0

    def _full(self) -> APIError:
        if self.full_status == 503:
            return APIError(
                503, "The engine is currently overloaded, please try again later.", code="overloaded"
            )
        return APIError(
            429,
            "The server is handling too many requests right now (queue full). Please retry after a short wait.",
            code="queue_full",
            type="requests",
            headers={"retry-after": "1"},
        )

    async def acquire(self) -> None:
        """Take a generation slot, waiting in the queue if all are busy; raise when it is full."""
        if self._slots is not None:
            if self._slots.locked() or self.waiting:
                if self.max_queue is not None and self.waiting >= self.max_queue:
                    raise self._full()
                self.waiting += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.waiting -= 1
            else:
                await self._slots.acquire()
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        if self._slots is not None:
            self._slots.release()
