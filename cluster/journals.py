"""Collecting the instances' request journals (``GET /llmsim/requests``) around a traffic run.

Before the run, a ``limit=1`` read gives each instance's journal ``total`` (and tells early that
a journal cannot be read: unreachable, control API forbidden, an llmsim without journal). After
the run, the entries whose trace starts with the run's prefix are read; the ring may have dropped
some of them if more than ``size`` requests arrived in between, and that is said, not hidden.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from llmsim_cluster import responses

PATH = "/llmsim/requests"
MAX_LIMIT = 10_000
TIMEOUT_S = 5.0


@dataclass
class Journal:
    """One instance's journal for one run, or why it is missing or partial."""

    instance: str
    url: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # None: read in full
    read: bool = False  # entries were read (maybe incompletely: see problem)

    @property
    def complete(self) -> bool:
        return self.read and self.problem is None


async def _get(
    http: aiohttp.ClientSession, url: str, params: dict[str, str], token: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(JSON body, None) or (None, why not) in one sentence fragment."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.get(url.rstrip("/") + PATH, params=params, headers=headers) as response:
            payload = await response.read()
            if response.status == 200:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    return None, "journal is not JSON"
                if isinstance(data, dict) and isinstance(data.get("entries"), list):
                    return data, None
                return None, "journal has no entries list"
            if response.status in (401, 403):
                why = responses.error_message(payload)
                hint = "" if token else " (give --admin-token)"
                return None, f"control API refused ({response.status}: {why}){hint}"
            if response.status in (404, 405):
                return None, "no journal (an llmsim without GET /llmsim/requests)"
            return None, f"HTTP {response.status}: {responses.error_message(payload)}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return None, f"unreachable ({str(exc) or type(exc).__name__})"


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))


async def totals(targets: Sequence[tuple[str, str]], token: str | None) -> dict[str, int | str]:
    """``(id, url)`` -> the journal's ``total`` now, or why it cannot be read."""
    async with _session() as http:
        answers = await asyncio.gather(*(_get(http, url, {"limit": "1"}, token) for _, url in targets))
    return {
        instance: (int(data.get("total") or 0) if data is not None else why or "?")
        for (instance, _), (data, why) in zip(targets, answers, strict=True)
    }


async def collect(
    targets: Sequence[tuple[str, str]],
    trace_prefix: str,
    token: str | None,
    before: dict[str, int | str] | None = None,
) -> list[Journal]:
    """Every target's entries for ``trace_prefix``; ``before`` (from :func:`totals`) detects overflow."""
    before = before or {}
    params = {"trace": trace_prefix, "limit": str(MAX_LIMIT)}
    async with _session() as http:
        answers = await asyncio.gather(*(_get(http, url, params, token) for _, url in targets))
    journals = []
    for (instance, url), (data, why) in zip(targets, answers, strict=True):
        journal = Journal(instance, url)
        if data is None:
            journal.problem = why
        else:
            journal.read = True
            journal.entries = [e for e in data["entries"] if isinstance(e, dict)]
            journal.problem = _overflow(data, before.get(instance), len(journal.entries))
        journals.append(journal)
    return journals


def _overflow(data: dict[str, Any], before: int | str | None, got: int) -> str | None:
    """Why the entries read may not be all of the run's, or None."""
    size, total = int(data.get("size") or 0), int(data.get("total") or 0)
    if size == 0:
        return "journal turned off on this instance (journal_size 0)"
    if got >= MAX_LIMIT:
        return f"more than {MAX_LIMIT} entries for this run: only the newest were read"
    if isinstance(before, int):
        arrived = total - before
        if arrived > size:
            return f"ring overflowed: {arrived} requests arrived during the run, it keeps {size}"
        return None
    if total > size:
        return (
            f"ring has dropped entries ({total} journaled, it keeps {size}); some of this run's may be gone"
        )
    return None
