"""What ``llmsim check`` scenarios stand on: a gateway URL, the instances behind it, and ways to
break one of them and to see what every instance received.

A scenario changes one instance through its control API (faults, latency, Retry-After) or stops
it through supervisord, sends traced traffic through the gateway, and reads the journals back.
Every change is undone when the scenario ends, however it ends (an error, Ctrl-C): ``broken`` and
``stopped`` are context managers that restore what they found.
"""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from supervisor.xmlrpc import Faults

from llmsim_cluster import journals, reconcile, supervisor, traffic
from llmsim_cluster.apis import OPENAI, Api
from llmsim_cluster.inventory import Inventory, Member

CONFIG = "/llmsim/config"
TIMEOUT_S = 5.0
HEAL_TIMEOUT_S = 30.0


class TestbedError(Exception):
    """An instance could not be changed or restored: the scenario cannot run as designed."""


@dataclass
class Run:
    """One traffic run: what the client saw, what the instances journaled, and the two matched."""

    outcomes: list[traffic.Outcome]
    journals: list[journals.Journal]
    recon: reconcile.Reconciliation
    elapsed: float

    def attempts_on(self, instance: str) -> list[reconcile.Attempt]:
        return sorted(
            (a for s in self.recon.stories.values() for a in s.attempts if a.instance == instance),
            key=lambda a: a.at,
        )

    @property
    def failed(self) -> list[traffic.Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def problems(self) -> list[str]:
        return [f"{j.instance}: {j.problem}" for j in self.journals if j.problem]


@dataclass
class Testbed:
    __test__ = False  # a name pytest would otherwise collect

    url: str  # the gateway's chat URL (chat completions, or messages with the Anthropic API)
    inventory: Inventory
    model: str | None = None  # None: the API's default model
    headers: dict[str, str] = field(default_factory=dict)  # the client's own (API key, ...)
    concurrency: int = 8
    timeout: float = 30.0
    on_done: Callable[[], None] | None = None
    api: Api = OPENAI  # the API the traffic speaks

    @property
    def members(self) -> list[Member]:
        return [m for m in self.inventory.members if m.url]

    def _auth(self) -> dict[str, str]:
        token = self.inventory.token
        return {"authorization": f"Bearer {token}"} if token else {}

    async def run(
        self,
        requests: int,
        *,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        interval: float = 0.0,
        concurrency: int | None = None,
        timeout: float | None = None,
        sticky_header: str | None = None,
        include_usage: bool = False,
    ) -> Run:
        targets = self.inventory.targets()
        before = await journals.totals(targets, self.inventory.token)
        run_id = traffic.new_run_id("ck")
        started = time.perf_counter()
        outcomes = await traffic.run_traffic(
            self.url,
            requests,
            concurrency or self.concurrency,
            run_id=run_id,
            api=self.api,
            model=self.model,
            stream=stream,
            headers={**self.headers, **(headers or {})},
            sticky_header=sticky_header,
            timeout=timeout or self.timeout,
            interval=interval,
            include_usage=include_usage,
            on_done=self.on_done,
        )
        elapsed = time.perf_counter() - started
        read = await _settled(targets, run_id, self.inventory.token, before)
        sent = [reconcile.Sent(o.trace, o.started, o.ok, o.status, o.instance) for o in outcomes]
        complete = all(j.complete for j in read) and len(read) == len(self.inventory.members)
        recon = reconcile.reconcile(sent, {j.instance: j.entries for j in read}, complete)
        return Run(outcomes, read, recon, elapsed)

    async def _control(self, member: Member, method: str, body: Any = None) -> dict[str, Any]:
        assert member.url
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
            try:
                async with http.request(method, member.url + CONFIG, json=body, headers=self._auth()) as r:
                    data = await r.json(content_type=None)
                    if r.status != 200:
                        error = data.get("error", {}) if isinstance(data, dict) else {}
                        raise TestbedError(
                            f"{member.id}: {method} {CONFIG} answered {r.status}: {error.get('message', data)}"
                        )
                    return data
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                raise TestbedError(
                    f"{member.id}: control API unreachable ({exc or type(exc).__name__})"
                ) from None

    @asynccontextmanager
    async def broken(self, member: Member, patch: dict[str, Any]) -> AsyncIterator[None]:
        """``member`` runs with ``patch`` applied to its settings, and as it was afterwards."""
        current = await self._control(member, "GET")
        previous = {name: current.get(name) for name in patch}
        await self._control(member, "PATCH", patch)
        try:
            yield
        finally:
            await self._control(member, "PATCH", previous)

    @asynccontextmanager
    async def stopped(self, member: Member) -> AsyncIterator[None]:
        """``member``'s process is stopped (connections refused), then started and healthy again."""
        run_dir = self.inventory.run_dir
        if run_dir is None:
            raise TestbedError("stopping an instance needs the local cluster (llmsim cluster up)")
        api = supervisor.connect(run_dir)
        await asyncio.to_thread(api.stopProcess, member.id, True)
        try:
            yield
        finally:
            try:
                await asyncio.to_thread(api.startProcess, member.id, True)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode != Faults.ALREADY_STARTED:
                    raise
            await self._healthy(member)

    async def _healthy(self, member: Member) -> None:
        deadline = time.monotonic() + HEAL_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"{member.url}/health") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.05)
        raise TestbedError(f"{member.id} did not come back healthy within {HEAL_TIMEOUT_S:g}s")


async def _settled(
    targets: list[tuple[str, str]], run_id: str, token: str | None, before: dict[str, int | str]
) -> list[journals.Journal]:
    """The run's journals once no entry is in flight (a gateway may still be retrying, or an
    instance still holding an abandoned request), or as they are after a short grace."""
    deadline = time.monotonic() + 3.0
    while True:
        read = await journals.collect(targets, run_id + "-", token, before)
        busy = any(e.get("ended") == "in_flight" for j in read for e in j.entries)
        if not busy or time.monotonic() > deadline:
            return read
        await asyncio.sleep(0.05)
