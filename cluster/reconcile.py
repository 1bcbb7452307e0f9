"""Per-trace reconciliation of what the client saw with what the instances journaled.

Pure: no I/O, so retries, hedging, failover and attribution are tested on synthetic journals.
The client knows the outcome of each request; the journals know every attempt a gateway made on
its behalf (instance, arrival, status, how it ended). Together they say who answered, who was
tried first, and who produced an error - or that no instance saw the request, so the gateway
produced the error itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GATEWAY = "gateway"  # no instance saw the request: the gateway answered by itself
UNKNOWN = "unknown"  # the journals that could tell are missing


@dataclass(frozen=True)
class Sent:
    """What the client did and saw for one trace."""

    trace: str
    started: float  # unix seconds
    ok: bool
    status: int | None
    seen: str | None  # identity read from the response, if any


@dataclass(frozen=True)
class Attempt:
    """One journal entry: one time an instance received the request."""

    instance: str
    at: float
    status: int | None
    ended: str | None
    duration_ms: float | None
    fault: str | None = None

    @property
    def end(self) -> float:
        return float("inf") if self.duration_ms is None else self.at + self.duration_ms / 1000

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.ended in (None, "completed")

    @classmethod
    def from_entry(cls, instance: str, entry: Mapping[str, Any]) -> Attempt:
        return cls(
            instance,
            float(entry.get("at") or 0.0),
            entry.get("status"),
            entry.get("ended"),
            entry.get("duration_ms"),
            entry.get("fault"),
        )


@dataclass
class Story:
    """One request's path through the gateway."""

    trace: str
    attempts: list[Attempt]  # in arrival order
    answered_by: str | None  # the instance whose answer reached the client (ok requests)
    blamed: str | None  # failed requests: the instance that produced the error, GATEWAY or UNKNOWN
    hedged: bool  # two attempts in flight at once

    @property
    def extra_attempts(self) -> int:
        return max(0, len(self.attempts) - 1)

    @property
    def failover(self) -> bool:
        return len({a.instance for a in self.attempts}) > 1


@dataclass
class Tally:
    """Per instance: attempts received vs answers delivered, and what went wrong there."""

    attempts: int = 0
    answers: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # status or how it ended, per attempt
    blamed: int = 0  # client-visible failures attributed to it
    faults: Counter[str] = field(default_factory=Counter)  # faults it injected


@dataclass
class Reconciliation:
    stories: dict[str, Story]
    tallies: dict[str, Tally]
    complete: bool  # every known instance's journal covered the whole run

    @property
    def retries(self) -> Counter[int]:
        """Extra attempts per request -> how many requests had that many."""
        return Counter(s.extra_attempts for s in self.stories.values())

    @property
    def retried(self) -> int:
        return sum(1 for s in self.stories.values() if s.extra_attempts and not s.hedged)

    @property
    def failovers(self) -> int:
        return sum(1 for s in self.stories.values() if s.failover)

    @property
    def hedged(self) -> int:
        return sum(1 for s in self.stories.values() if s.hedged)

    @property
    def gateway_errors(self) -> int:
        return sum(1 for s in self.stories.values() if s.blamed == GATEWAY)

    @property
    def unseen(self) -> int:
        """Requests no journal shows: answered by an instance outside the known set, or by a cache."""
        return sum(1 for s in self.stories.values() if not s.attempts)


# A retry sent the moment an error arrives can reach the next instance before the first one has
# finished its bookkeeping: overlaps shorter than this are a retry, not a hedge.
HEDGE_SLACK_S = 0.005


def _overlapping(attempts: Sequence[Attempt]) -> bool:
    latest_end = float("-inf")
    for attempt in attempts:
        if attempt.at < latest_end - HEDGE_SLACK_S:
            return True
        latest_end = max(latest_end, attempt.end)
    return False


def _answered_by(sent: Sent, attempts: Sequence[Attempt]) -> str | None:
    if sent.seen:
        return sent.seen
    good = [a for a in attempts if a.succeeded]
    return good[-1].instance if good else None


def _blame(sent: Sent, attempts: Sequence[Attempt], complete: bool) -> str:
    """Who produced the error the client got."""
    if sent.seen:
        return sent.seen  # the response itself names its instance
    if not attempts:
        return GATEWAY if complete else UNKNOWN
    same = [a for a in attempts if sent.status is not None and a.status == sent.status and not a.succeeded]
    if same:
        return same[-1].instance
    if attempts[-1].succeeded:
        return GATEWAY  # the instance answered in full; what reached the client was broken on the way
    failed = [a for a in attempts if not a.succeeded]
    return failed[-1].instance


def reconcile(
    sent: Sequence[Sent], journals: Mapping[str, Sequence[Mapping[str, Any]]], complete: bool = True
) -> Reconciliation:
    """``journals``: instance ID -> its journal entries (any traces; the ones of ``sent`` are used).

    ``complete`` says every known instance's journal is here and whole; without it, a request no
    journal shows is blamed on UNKNOWN, not on the gateway.
    """
    by_trace: dict[str, list[Attempt]] = {s.trace: [] for s in sent}
    tallies: dict[str, Tally] = {instance: Tally() for instance in journals}
    for instance, entries in journals.items():
        for entry in entries:
            attempts = by_trace.get(entry.get("trace") or "")
            if attempts is None:
                continue
            attempt = Attempt.from_entry(instance, entry)
            attempts.append(attempt)
            tally = tallies[instance]
            tally.attempts += 1
            if attempt.fault:
                tally.faults[attempt.fault] += 1
            if not attempt.succeeded:
                tally.errors[str(attempt.status) if attempt.ended in (None, "completed", "error") else
                             str(attempt.ended)] += 1  # fmt: skip
    stories = {}
    for item in sent:
        attempts = sorted(by_trace[item.trace], key=lambda a: a.at)
        story = Story(item.trace, attempts, None, None, _overlapping(attempts))
        if item.ok:
            story.answered_by = _answered_by(item, attempts)
            if story.answered_by:
                tallies.setdefault(story.answered_by, Tally()).answers += 1
        else:
            story.blamed = _blame(item, attempts, complete)
            if story.blamed not in (GATEWAY, UNKNOWN):
                tallies.setdefault(story.blamed, Tally()).blamed += 1
        stories[item.trace] = story
    return Reconciliation(stories, tallies, complete)
