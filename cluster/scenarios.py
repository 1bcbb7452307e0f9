"""The scenarios of ``llmsim check``: each breaks something on purpose and judges the gateway.

A scenario returns a :class:`Score`: a verdict, the figures behind it, and one sentence saying why.
Verdicts: ``pass`` (the gateway shielded the client), ``warn`` (the client saw the failure, but
honestly: an error status, a visibly broken stream), ``fail`` (the client got errors a retry would
have avoided, a silently truncated answer, wrong usage, or a Retry-After ignored), ``skip`` (the
setup cannot run it), ``error`` (the scenario itself could not run).

Figures come from both ends: what the client saw (:mod:`cluster.traffic`) and what each instance
received (the journals, matched per request by :mod:`cluster.reconcile`), so retries, failover and
the gateway's own errors are counted, not guessed.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from llmsim.auth import mask
from llmsim_cluster import responses, routing
from llmsim_cluster.inventory import Member
from llmsim_cluster.testbed import Run, Testbed

PASS, WARN, FAIL, SKIP, ERROR = "pass", "warn", "fail", "skip", "error"


@dataclass
class Options:
    requests: int = 40  # a scenario's traffic
    target: str | None = None  # the instance to break (default: the first known)
    retry_after: float = 2.0  # seconds, for rate-limit and overload
    ttft_bound: float = 2.0  # seconds: the timeout scenario's slow instance takes 3x this
    expect: dict[str, float] | None = None  # distribution weights (None: uniform)
    sticky_header: str | None = None
    alpha: float = 0.01
    heal_wait: float = 15.0  # seconds to wait for a healed instance to get traffic again


@dataclass
class Score:
    scenario: str
    verdict: str
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)


Scenario = Callable[[Testbed, Options], Awaitable[Score]]


def _target(bed: Testbed, options: Options) -> Member:
    members = bed.members
    if options.target:
        for member in members:
            if member.id == options.target:
                return member
        raise LookupError(f"--target {options.target}: not among the instances with a control URL")
    if len(members) < 2:
        raise LookupError("needs at least two instances with a known URL (one to break, one to fail over to)")
    return members[0]


def _samples(run: Run, limit: int = 3) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for outcome in run.failed:
        key = f"{outcome.failure}: {outcome.detail or ''}"
        if not seen[key] and len(out) < limit:
            out.append(key if outcome.status is None else f"{outcome.status} {key}")
        seen[key] += 1
    return out


def _client_failures(run: Run) -> dict[str, int]:
    return dict(Counter(o.failure or "" for o in run.failed))


def _per_instance(run: Run) -> dict[str, dict[str, int]]:
    return {
        name: {"attempts": t.attempts, "answers": t.answers, "blamed": t.blamed}
        for name, t in sorted(run.recon.tallies.items())
    }


def _retry_figures(run: Run, target: str) -> dict[str, Any]:
    recon = run.recon
    sent = len(run.outcomes)
    attempts = sum(len(s.attempts) for s in recon.stories.values())
    hit = [s for s in recon.stories.values() if any(a.instance == target for a in s.attempts)]
    saved = [s for s in hit if s.answered_by and s.answered_by != target]
    on_target = run.attempts_on(target)
    return {
        "requests": sent,
        "client_errors": len(run.failed),
        "attempts": attempts,
        "retries_per_request": round((attempts - sent) / sent, 2) if sent else 0.0,
        "attempts_on_target": len(on_target),
        "failed_over": len(saved),
        "gateway_errors": recon.gateway_errors,
        "hedged": recon.hedged,
        "per_instance": _per_instance(run),
    }


def _named(score: Score, name: str) -> Score:
    score.scenario = name
    return score


def _journal_note(run: Run) -> str:
    return f" (journals incomplete: {'; '.join(run.problems)})" if run.problems else ""


# --- distribution and affinity --------------------------------------------------------------


async def distribution(bed: Testbed, options: Options) -> Score:
    run = await bed.run(options.requests * 2)
    served = Counter(s.answered_by for s in run.recon.stories.values() if s.answered_by)
    dist = routing.distribution(served, options.alpha, options.expect, bed.inventory.expected())
    figures = {"answers": dict(sorted(served.items())), "p_value": round(dist.p_value, 4)}
    figures |= {"client_errors": len(run.failed), "per_instance": _per_instance(run)}
    against = routing.describe(dist.expected_share)
    if run.failed:
        return Score("distribution", FAIL, f"{len(run.failed)} requests failed with nothing broken", figures,
                     _samples(run))  # fmt: skip
    if not bed.inventory.known:
        return Score("distribution", WARN, "spread unverifiable: the set of instances is unknown", figures)
    if dist.passed:
        return Score("distribution", PASS, f"consistent with {against} (p={dist.p_value:.3g})", figures)
    why = f"starved: {', '.join(dist.starved)}" if dist.starved else f"p={dist.p_value:.3g} < {options.alpha}"
    return Score("distribution", FAIL, f"not {against} ({why})", figures)


async def affinity(bed: Testbed, options: Options) -> Score:
    if not options.sticky_header:
        return Score("affinity", SKIP, "give --sticky-header NAME to check session affinity")
    run = await bed.run(options.requests, sticky_header=options.sticky_header)
    pairs = [(o.session, run.recon.stories[o.trace].answered_by) for o in run.outcomes if o.session]
    aff = routing.affinity([(s, i) for s, i in pairs if i])
    figures = {
        "sessions": len(aff.sessions),
        "split_sessions": len(aff.violations),
        "client_errors": len(run.failed),
    }
    verdict = PASS if aff.passed and not run.failed else FAIL
    return Score("affinity", verdict, "every session stayed on one instance" if aff.passed else
                 "sessions were split across instances", figures)  # fmt: skip


# --- failover ---------------------------------------------------------------------------------


def _failover_verdict(name: str, run: Run, target: str, cause: str, journaled: bool = True) -> Score:
    """``journaled``: the target can journal what reaches it (not so when it is stopped)."""
    figures = _retry_figures(run, target)
    failed = len(run.failed)
    note = _journal_note(run)
    if not failed and journaled and not figures["attempts_on_target"] and not run.problems:
        return Score(name, WARN, f"{cause}, but the gateway sent it nothing: not exercised", figures)
    if not failed:
        if figures["failed_over"]:
            how = f"{figures['failed_over']} retried on another instance"
            return Score(name, PASS, f"{cause}: the client saw no error; {how}{note}", figures)
        return Score(name, PASS, f"{cause}: the client saw no error; {target} got no traffic{note}", figures)
    retried = figures["attempts"] > len(run.outcomes)
    how = "after retrying" if retried else "without a retry (attempts = requests)"
    return Score(name, FAIL, f"{cause}: {failed} of {len(run.outcomes)} requests failed at the client {how}{note}",
                 figures, _samples(run))  # fmt: skip


async def in_rotation(bed: Testbed, options: Options, target: str) -> float | None:
    """Seconds until the gateway sends ``target`` a request again (small bursts, a few a second),
    or None if it does not within ``heal_wait``: a gateway cools a failed backend down for a
    while (nginx's fail_timeout, LiteLLM's cooldown_time), and that is what this measures."""
    started = time.monotonic()
    burst = 2 * max(2, len(bed.members))
    while True:
        run = await bed.run(burst, concurrency=min(burst, bed.concurrency))
        if run.attempts_on(target):
            return round(time.monotonic() - started, 2)
        if time.monotonic() - started > options.heal_wait:
            return None
        await asyncio.sleep(0.25)


@asynccontextmanager
async def breaking(
    bed: Testbed, options: Options, member: Member, patch: dict[str, Any]
) -> AsyncIterator[Score | None]:
    """``member`` broken by ``patch`` for the block, once the gateway sends it traffic at all (a
    previous scenario may have left it cooled down); yields a WARN score instead when it does not."""
    if await in_rotation(bed, options, member.id) is None:
        yield Score("", WARN, f"the gateway sent {member.id} nothing for {options.heal_wait:g}s before the "
                    "scenario (still cooled down from an earlier one?): not exercised")  # fmt: skip
        return
    async with bed.broken(member, patch):
        yield None


def _healing(score: Score, back: float | None, target: str, options: Options) -> Score:
    score.figures["back_in_rotation_after_s"] = back
    if back is None:
        score.summary += f"; {target} got no traffic within {options.heal_wait:g}s of healing"
    else:
        score.summary += f"; back in rotation {back:g}s after healing"
    return score


async def failover_5xx(bed: Testbed, options: Options) -> Score:
    member = _target(bed, options)
    async with breaking(bed, options, member, {"failure_rate": 1.0, "failure_types": "server_error"}) as skip:
        if skip:
            return _named(skip, "failover-5xx")
        run = await bed.run(options.requests)
    score = _failover_verdict("failover-5xx", run, member.id, f"{member.id} answered 500")
    on_target = run.attempts_on(member.id)
    if on_target:  # how long the gateway kept sending to a backend that only fails
        score.figures["target_tried_for_s"] = round(on_target[-1].at - on_target[0].at, 3)
    return _healing(score, await in_rotation(bed, options, member.id), member.id, options)


async def failover_down(bed: Testbed, options: Options) -> Score:
    if bed.inventory.run_dir is None:
        return Score(
            "failover-down", SKIP, "stopping an instance needs the local cluster (llmsim cluster up)"
        )
    member = _target(bed, options)
    if await in_rotation(bed, options, member.id) is None:
        return Score("failover-down", WARN, f"the gateway sent {member.id} nothing before the scenario")
    async with bed.stopped(member):
        run = await bed.run(options.requests)
    cause = f"{member.id} stopped (connection refused)"
    score = _failover_verdict("failover-down", run, member.id, cause, journaled=False)
    return _healing(score, await in_rotation(bed, options, member.id), member.id, options)


# --- Retry-After ------------------------------------------------------------------------------


def _early_resends(run: Run, target: str, wait: float, status: int) -> list[float]:
    """Gaps (s) between an answer ``status`` from ``target`` and the next attempt sent to it,
    for gaps shorter than the ``wait`` it asked for (10% slack for clocks and rounding)."""
    attempts = run.attempts_on(target)
    early = []
    for told, nxt in zip(attempts, attempts[1:], strict=False):
        if told.status == status:
            gap = nxt.at - told.end
            if gap < wait * 0.9:
                early.append(round(max(gap, 0.0), 3))
    return early


async def _retry_after_case(
    bed: Testbed, options: Options, name: str, fault: str, status: int, wait: float
) -> Score:
    member = _target(bed, options)
    # Spread over a few Retry-After periods, so a gateway that honours it has a chance to show it.
    span = max(2 * wait, 1.0) + 1.0
    interval = span / options.requests
    patch = {"failure_rate": 1.0, "failure_types": fault, "retry_after": wait}
    async with breaking(bed, options, member, patch) as skip:
        if skip:
            return _named(skip, name)
        run = await bed.run(options.requests, interval=interval, concurrency=min(4, bed.concurrency))
    figures = _retry_figures(run, member.id)
    passed_through = sum(1 for o in run.failed if o.status == status)
    early = _early_resends(run, member.id, wait, status) if wait else []
    figures |= {
        "retry_after_s": wait,
        "passed_to_client": passed_through,
        "resent_before_retry_after": len(early),
    }
    if early:
        figures["shortest_gap_s"] = min(early)
    told = f"{member.id} answered {status}" + (
        f" with Retry-After {wait:g}s" if wait else " without Retry-After"
    )
    note = _journal_note(run)
    if run.failed:
        return Score(name, FAIL, f"{told}: {len(run.failed)} of {len(run.outcomes)} reached the client "
                     f"({passed_through} as {status}){note}", figures, _samples(run))  # fmt: skip
    if early:
        return Score(name, WARN, f"{told}: no client error, but {len(early)} attempts went back to "
                     f"{member.id} before Retry-After ran out (shortest gap {min(early):g}s){note}", figures)  # fmt: skip
    return Score(name, PASS, f"{told}: no client error; retried elsewhere and waited{note}", figures)


async def rate_limit(bed: Testbed, options: Options) -> Score:
    return await _retry_after_case(bed, options, "rate-limit", "rate_limit", 429, options.retry_after)


async def overload(bed: Testbed, options: Options) -> Score:
    with_wait = await _retry_after_case(bed, options, "overload", "overloaded", 503, options.retry_after)
    without = await _retry_after_case(bed, options, "overload", "overloaded", 503, 0.0)
    order = [FAIL, WARN, PASS]
    worst = min(with_wait.verdict, without.verdict, key=order.index)
    figures = {
        "client_errors": with_wait.figures.get("client_errors", 0) + without.figures.get("client_errors", 0),
        "resent_before_retry_after": with_wait.figures.get("resent_before_retry_after", 0),
        "with_retry_after": with_wait.figures,
        "without_retry_after": without.figures,
    }
    return Score("overload", worst, f"{with_wait.summary}; {without.summary}", figures,
                 with_wait.samples + without.samples)  # fmt: skip


# --- slow and broken answers ------------------------------------------------------------------


async def timeout(bed: Testbed, options: Options) -> Score:
    member = _target(bed, options)
    bound = options.ttft_bound
    slow = 3 * bound
    async with breaking(
        bed, options, member, {"prefill_overhead": slow * 1000, "prefill_overhead_stddev": 0.0}
    ) as skip:
        if skip:
            return _named(skip, "timeout")
        run = await bed.run(options.requests, timeout=slow + 10)
    stories = run.recon.stories
    first_on_target = [s for s in stories.values() if s.attempts and s.attempts[0].instance == member.id]
    gave_up = [s for s in first_on_target if len(s.attempts) > 1]
    waits = [s.attempts[1].at - s.attempts[0].at for s in gave_up]
    latencies = {o.trace: o.latency for o in run.outcomes}
    slow_clients = [latencies[s.trace] for s in first_on_target if latencies.get(s.trace, 0) >= slow * 0.9]
    figures = _retry_figures(run, member.id) | {
        "slow_ttft_s": slow,
        "bound_s": bound,
        "sent_to_slow_first": len(first_on_target),
        "failed_over_after_s": round(statistics.median(waits), 3) if waits else None,
        "clients_waited_full_ttft": len(slow_clients),
    }
    note = _journal_note(run)
    told = f"{member.id} took {slow:g}s to the first token"
    if not first_on_target:
        return Score("timeout", WARN, f"{told}, but the gateway sent it nothing to time out{note}", figures)
    if slow_clients:
        return Score("timeout", FAIL, f"{told}: {len(slow_clients)} clients waited it out (no gateway "
                     f"timeout below {slow:g}s){note}", figures)  # fmt: skip
    if run.failed:
        return Score("timeout", WARN, f"{told}: the gateway timed out but {len(run.failed)} requests failed "
                     f"at the client{note}", figures, _samples(run))  # fmt: skip
    after = figures["failed_over_after_s"]
    return Score("timeout", PASS, f"{told}: timed out and failed over after ~{after}s{note}", figures)


async def stream_cut(bed: Testbed, options: Options) -> Score:
    member = _target(bed, options)
    patch = {"failure_rate": 1.0, "failure_types": "disconnect", "fault_after": 3}
    async with breaking(bed, options, member, patch) as skip:
        if skip:
            return _named(skip, "stream-cut")
        run = await bed.run(options.requests, stream=True)
    kinds = _client_failures(run)
    silent = kinds.get(responses.TRUNCATED, 0)
    figures = _retry_figures(run, member.id) | {"client_failures": kinds}
    told = f"{member.id} dropped its streams after 3 events"
    note = _journal_note(run)
    if not figures["attempts_on_target"] and not run.problems:
        return Score("stream-cut", WARN, f"{told}, but the gateway sent it nothing: not exercised", figures)
    if silent:
        return Score("stream-cut", FAIL, f"{told}: {silent} clients got a 200 stream that just ended, without "
                     f"an error or its end marker (silent truncation){note}", figures, _samples(run))  # fmt: skip
    if run.failed:
        return Score("stream-cut", WARN, f"{told}: {len(run.failed)} clients saw the stream break "
                     f"(visibly){note}", figures, _samples(run))  # fmt: skip
    return Score("stream-cut", PASS, f"{told}: every client got a whole stream{note}", figures)


# --- what passes through --------------------------------------------------------------------


def _usage_mismatches(run: Run) -> tuple[int, int, list[str]]:
    checked, wrong, samples = 0, 0, []
    by_instance = {j.instance: {e.get("trace"): e for e in j.entries} for j in run.journals}
    for outcome in run.outcomes:
        story = run.recon.stories.get(outcome.trace)
        if not outcome.ok or story is None or not story.answered_by:
            continue
        entry = by_instance.get(story.answered_by, {}).get(outcome.trace)
        if entry is None or not entry.get("usage"):
            continue
        checked += 1
        want = entry["usage"]
        got = outcome.usage or {}
        if any(got.get(k) != want[k] for k in ("prompt_tokens", "completion_tokens")):
            wrong += 1
            if len(samples) < 3:
                samples.append(f"{outcome.trace}: client {got or 'no usage'}, instance {want}")
    return checked, wrong, samples


async def usage(bed: Testbed, options: Options) -> Score:
    whole = await bed.run(options.requests // 2 or 1)
    streamed = await bed.run(options.requests // 2 or 1, stream=True, include_usage=True)
    checked, wrong, samples = 0, 0, []
    for run in (whole, streamed):
        c, w, s = _usage_mismatches(run)
        checked, wrong, samples = checked + c, wrong + w, samples + s
    failed = len(whole.failed) + len(streamed.failed)
    figures = {"compared": checked, "mismatched": wrong, "client_errors": failed}
    if not checked:
        return Score("usage", ERROR, "no answer could be matched to an instance's journal", figures)
    if wrong:
        return Score("usage", FAIL, f"{wrong} of {checked} answers reached the client with other token "
                     "counts than the instance reported", figures, samples)  # fmt: skip
    return Score("usage", PASS, f"usage at the client equals usage at the instance ({checked} answers, "
                 "streamed and not)", figures)  # fmt: skip


# Headers any HTTP hop sets or rewrites: not "added by the gateway" in any interesting sense.
_HOP = frozenset({"host", "content-length", "connection", "accept-encoding", "transfer-encoding", "accept"})
PROBE_HEADER = "x-llmsim-check"
KEY_HEADERS = ("authorization", "x-api-key")  # where a client's API key travels (OpenAI, Anthropic)


def _client_key(sent: dict[str, str]) -> str | None:
    """The API key the client sends: a Bearer token, else Anthropic's ``x-api-key``."""
    for name, value in sent.items():
        if name.lower() == "authorization" and value.partition(" ")[2]:
            return value.partition(" ")[2]
    return next((v for k, v in sent.items() if k.lower() == "x-api-key" and v), None)


async def headers(bed: Testbed, options: Options) -> Score:
    marker = "sent-by-llmsim-check"
    secret = _client_key(bed.headers)
    run = await bed.run(4, headers={PROBE_HEADER: marker})
    sent = {k.lower() for k in bed.headers} | {PROBE_HEADER, "x-llmsim-trace", "content-type", "user-agent"}
    entries = [e for j in run.journals for e in j.entries]
    if not entries:
        return Score("headers", ERROR, "no request reached a journal" + _journal_note(run))
    seen = {name for e in entries for name in (e.get("headers") or {})}
    arrived = sorted(sent & seen)
    dropped = sorted(sent - seen)
    added = sorted(seen - sent - _HOP)
    figures: dict[str, Any] = {"arrived": arrived, "dropped": dropped, "added": added}
    forwarded_key = False
    if secret:
        shown = {(e.get("headers") or {}).get(name, "") for e in entries for name in KEY_HEADERS}
        # The instance's own masking of the same key gives the same text.
        forwarded_key = any(value.endswith(mask(secret)) for value in shown if value)
        figures["client_key_reached_instance"] = forwarded_key
    notes = []
    if PROBE_HEADER in dropped:
        notes.append("custom headers are dropped (x-llmsim-* controls cannot reach the instances)")
    if forwarded_key:
        notes.append("the client's API key reached the instance unchanged")
    verdict = WARN if notes else PASS
    summary = "; ".join(notes) or f"client headers arrive; the gateway adds {', '.join(added) or 'nothing'}"
    return Score("headers", verdict, summary, figures)


SCENARIOS: dict[str, Scenario] = {
    "distribution": distribution,
    "affinity": affinity,
    "failover-5xx": failover_5xx,
    "failover-down": failover_down,
    "rate-limit": rate_limit,
    "overload": overload,
    "timeout": timeout,
    "stream-cut": stream_cut,
    "usage": usage,
    "headers": headers,
}
