"""How a probe result is shown: rich tables and a bar chart for people, JSON for CI.

Every verdict line has a level: ``pass``/``fail`` for checks, ``warn`` for what keeps the verdict
from being sure (``--strict`` fails on it), ``info`` for figures without a threshold (retries,
failover, hedging from the journals).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from llmsim_cluster.reconcile import GATEWAY, UNKNOWN, Tally
from llmsim_cluster.routing import describe, percentile

if TYPE_CHECKING:
    from llmsim_cluster.probe import Result
    from llmsim_cluster.traffic import Outcome

SAMPLES = 6  # distinct errors shown
_STYLE = {"pass": "bold green", "fail": "bold red", "warn": "bold yellow", "info": "bold blue"}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _kinds(group: list[Outcome]) -> Counter[str]:
    """Client-visible failures by kind: a status (500), conn, cut, malformed, stream_error…"""
    return Counter((o.failure or "").removeprefix("http_") for o in group if not o.ok)


def _rows(result: Result) -> list[dict[str, Any]]:
    by_instance: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in result.outcomes:
        by_instance[result.attributed(outcome)].append(outcome)
    tallies: dict[str, Tally] = result.reconciliation.tallies if result.reconciliation else {}
    dist = result.distribution
    pseudo = (GATEWAY, UNKNOWN)
    names = list(dist.counts) if dist else []
    names += [m.id for m in result.inventory.members if m.id not in names]
    names += sorted(k for k in {*by_instance, *tallies} if k not in names and k not in pseudo)
    names += [k for k in pseudo if k in by_instance]
    total = len(result.outcomes)
    identified = sum(len(v) for k, v in by_instance.items() if k not in pseudo)
    rows = []
    for name in names:
        group = by_instance.get(name, [])
        tally = tallies.get(name)
        latencies = [o.latency for o in group if o.ok]
        ttfts = [o.ttft for o in group if o.ttft is not None]
        share = len(group) / identified if identified and name not in pseudo else None
        expected = dist.expected_share.get(name, 0.0) if dist and name not in pseudo else None
        rows.append(
            {
                "instance": name,
                "requests": len(group),
                "attempts": tally.attempts if tally else None,
                "answers": tally.answers if tally else None,
                "share": share,
                "expected_share": expected,
                "deviation": None if share is None or expected is None else share - expected,
                "latency_ms": {f"p{q}": _ms(percentile(latencies, q)) for q in (50, 95, 99)},
                "ttft_ms": {f"p{q}": _ms(percentile(ttfts, q)) for q in (50, 95, 99)}
                if result.stream
                else None,
                "errors": dict(_kinds(group)),
                "instance_errors": dict(tally.errors) if tally else None,
                "faults": dict(tally.faults) if tally else None,
                "of_total": len(group) / total if total else 0.0,
            }
        )
    return rows


def error_samples(result: Result) -> list[dict[str, Any]]:
    """Each distinct error the client got (kind, status, message), with how often and from whom."""
    groups: dict[tuple[str, int | None, str], list[str]] = defaultdict(list)
    for outcome in result.outcomes:
        if not outcome.ok:
            key = (outcome.failure or "?", outcome.status, outcome.detail or "")
            groups[key].append(result.attributed(outcome))
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    return [
        {"kind": kind, "status": status, "message": message, "count": len(who), "from": dict(Counter(who))}
        for (kind, status, message), who in ordered
    ]


def notable_traces(result: Result, limit: int = 100) -> list[dict[str, Any]]:
    """Requests that took more than one attempt or failed: each attempt in order, with its time
    (ms after the client sent the request), status and how it ended; who answered or is blamed."""
    rec = result.reconciliation
    if rec is None:
        return []
    started = {o.trace: o.started for o in result.outcomes}
    found = []
    for story in rec.stories.values():
        if not story.extra_attempts and story.blamed is None:
            continue
        t0 = started.get(story.trace, 0.0)
        attempts = [
            {
                "instance": a.instance,
                "after_ms": round((a.at - t0) * 1000, 1),
                "status": a.status,
                "ended": a.ended,
                "duration_ms": a.duration_ms,
            }
            for a in story.attempts
        ]
        found.append(
            {
                "trace": story.trace,
                "attempts": attempts,
                "answered_by": story.answered_by,
                "blamed": story.blamed,
                "hedged": story.hedged,
            }
        )
        if len(found) >= limit:
            break
    return found


def _path(trace: dict[str, Any]) -> str:
    steps = [
        f"{a['instance']} {a['status'] or '-'} {a['ended'] or ''} @{a['after_ms']:g}ms"
        for a in trace["attempts"]
    ]
    end = f"answered by {trace['answered_by']}" if trace["answered_by"] else f"error from {trace['blamed']}"
    return f"{trace['trace']}: {' -> '.join(steps) or 'no instance saw it'}; {end}"


def _distribution_line(result: Result) -> tuple[str, str] | None:
    dist = result.distribution
    if dist is None:
        return None
    if dist.unnamed_slots or (dist.extra and len(set(dist.expected_share.values())) <= 1):
        slots = len(dist.expected_share) + dist.unnamed_slots - dist.extra
        what = f"a uniform spread over {slots} instances"
    else:
        what = describe(dist.expected_share)
    text = f"distribution vs {what}: chi-square p = {dist.p_value:.4g} (alpha {dist.alpha})"
    if dist.starved:
        tallies = result.reconciliation.tallies if result.reconciliation else {}

        def tried(name: str) -> str:
            tally = tallies.get(name)
            return f"{name} (tried {tally.attempts}×, answered none)" if tally and tally.attempts else name

        text += f"; got nothing: {', '.join(tried(k) for k in dist.starved)}"
    if dist.unnamed_slots:
        text += f"; {dist.unnamed_slots} expected instance(s) never answered"
    if dist.extra:
        text += f"; {len(dist.counts)} instances answered, {len(dist.counts) - dist.extra} expected"
    if dist.unexpected:
        text += f"; unexpected: {', '.join(dist.unexpected)}"
    return ("pass" if dist.passed else "fail", text)


def _journal_lines(result: Result) -> list[tuple[str, str]]:
    rec = result.reconciliation
    if rec is None:
        return []
    n = len(rec.stories)
    attempts = sum(len(s.attempts) for s in rec.stories.values())
    read = sum(1 for j in result.journals if j.read)
    extra = ", ".join(f"{k} extra ×{v}" for k, v in sorted(rec.retries.items()) if k)
    text = f"journals of {read}/{len(result.journals)} instances: {attempts} attempts for {n} requests"
    text += f"; retried {rec.retried}" + (f" ({extra})" if extra else "")
    text += f"; failover {rec.failovers}; hedged/duplicated {rec.hedged}"
    text += f"; errors made by the gateway itself {rec.gateway_errors}"
    if rec.unseen:
        text += f"; {rec.unseen} request(s) in no journal"
    return [("info", text)]


def verdict_lines(result: Result) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    inv = result.inventory
    if inv.stopped:
        stopped = ", ".join(f"{k} ({v})" for k, v in inv.stopped.items())
        lines.append(("info", f"not expected, not running: {stopped}"))
    for warning in result.warnings:
        lines.append(("fail" if result.strict else "warn", warning))
    dist_line = _distribution_line(result)
    if dist_line:
        lines.append(dist_line)
    aff = result.affinity
    if aff is not None:
        bad = aff.violations
        text = f"session affinity: {len(aff.sessions) - len(bad)}/{len(aff.sessions)} sessions stayed on one instance"
        if bad:
            sample = "; ".join(f"{s} -> {', '.join(sorted(c))}" for s, c in list(bad.items())[:3])
            text += f" (violations: {sample})"
        lines.append(("pass" if aff.passed else "fail", text))
    failed = sum(not o.ok for o in result.outcomes)
    kinds = _kinds(result.outcomes)
    text = f"errors: {failed}/{len(result.outcomes)} ({result.error_rate:.1%}, allowed {result.max_error_rate:.1%})"
    if kinds:
        text += ": " + ", ".join(f"{k}×{v}" for k, v in kinds.most_common())
    lines.append(("pass" if result.error_rate <= result.max_error_rate else "fail", text))
    lines += _journal_lines(result)
    return lines


def report_json(result: Result) -> dict[str, Any]:
    dist = result.distribution
    aff = result.affinity
    rec = result.reconciliation
    inv = result.inventory
    return {
        "url": result.url,
        "run_id": result.run_id,
        "passed": result.passed,
        "requests": len(result.outcomes),
        "elapsed_s": round(result.elapsed, 3),
        "requests_per_s": round(len(result.outcomes) / result.elapsed, 1) if result.elapsed else None,
        "error_rate": result.error_rate,
        "failures": dict(_kinds(result.outcomes)),
        "error_samples": error_samples(result),
        "instances": _rows(result),
        "instance_set": {
            "known": inv.known,
            "source": inv.source,
            "expected": [m.id for m in inv.members],
            "count": inv.count,
            "stopped": inv.stopped,
        },
        "warnings": result.warnings,
        "journals": [
            {
                "instance": j.instance,
                "url": j.url,
                "read": j.read,
                "entries": len(j.entries),
                "problem": j.problem,
            }
            for j in result.journals
        ],
        "routing": None
        if rec is None
        else {
            "complete": rec.complete,
            "attempts": sum(len(s.attempts) for s in rec.stories.values()),
            "extra_attempts": {str(k): v for k, v in sorted(rec.retries.items())},
            "retried": rec.retried,
            "failovers": rec.failovers,
            "hedged": rec.hedged,
            "gateway_errors": rec.gateway_errors,
            "unseen": rec.unseen,
        },
        "traces": notable_traces(result),
        "distribution": None
        if dist is None
        else {
            "passed": dist.passed,
            "p_value": dist.p_value,
            "alpha": dist.alpha,
            "counts": dist.counts,
            "expected_share": dist.expected_share,
            "starved": dist.starved,
            "unexpected": dist.unexpected,
            "unnamed_slots": dist.unnamed_slots,
            "extra": dist.extra,
        },
        "affinity": None
        if aff is None
        else {
            "passed": aff.passed,
            "sessions": {s: dict(c) for s, c in aff.sessions.items()},
            "violations": {s: dict(c) for s, c in aff.violations.items()},
        },
        "verdict": [
            {"passed": level != "fail", "level": level, "check": text}
            for level, text in verdict_lines(result)
        ],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_report(result: Result, console: Console) -> None:
    rows = _rows(result)
    journaled = result.reconciliation is not None
    table = Table(title=f"llmsim probe: {result.url} (latencies in ms)", title_justify="left")
    table.add_column("instance", no_wrap=True)
    columns = [
        "reqs",
        *(["tried", "answered"] if journaled else []),
        "share",
        "expect",
        "dev",
        "p50",
        "p95",
        "p99",
    ]
    for column in (*columns, *(["ttft50"] if result.stream else [])):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("errors")
    for row in rows:
        deviation = row["deviation"]
        cells = [row["instance"], str(row["requests"])]
        if journaled:
            cells += [_count(row["attempts"]), _count(row["answers"])]
        cells += [
            _pct(row["share"]),
            _pct(row["expected_share"]),
            "-" if deviation is None else f"{deviation:+.1%}",
            *(_fmt_ms(row["latency_ms"][k]) for k in ("p50", "p95", "p99")),
        ]
        if result.stream:
            cells.append(_fmt_ms(row["ttft_ms"]["p50"]))
        errors = ", ".join(f"{k}×{v}" for k, v in sorted(row["errors"].items()))
        inside = row["instance_errors"]
        if inside:
            errors += (
                (" " if errors else "")
                + "(tried: "
                + ", ".join(f"{k}×{v}" for k, v in sorted(inside.items()))
                + ")"
            )
        cells.append(errors or "-")
        table.add_row(*cells, style="dim" if row["requests"] == 0 and not row["attempts"] else None)
    console.print(table)

    width = 40
    largest = max((r["of_total"] for r in rows), default=0) or 1
    label = max((len(r["instance"]) for r in rows), default=8)
    for row in rows:
        bar = "█" * round(row["of_total"] / largest * width)
        line = Text(f"{row['instance']:<{label}} ")
        line.append(bar or "·", style="cyan" if row["instance"] not in (UNKNOWN, GATEWAY) else "yellow")
        line.append(f" {row['of_total']:.1%}")
        console.print(line)

    samples = error_samples(result)
    if samples:
        console.print(Text("errors seen by the client:", style="bold"))
        for sample in samples[:SAMPLES]:
            who = ", ".join(f"{k}×{v}" for k, v in sample["from"].items())
            kind, status = sample["kind"], sample["status"]
            if kind.startswith("http_"):
                kind = f"HTTP {status}"
            elif status is not None:
                kind += f" (HTTP {status})"
            console.print(Text(f"  {sample['count']}× {kind} from {who}: {sample['message']}"))
        if len(samples) > SAMPLES:
            console.print(Text(f"  … and {len(samples) - SAMPLES} more distinct errors (--json lists all)"))

    traces = notable_traces(result, limit=3)
    if traces:
        console.print(
            Text("retried or failed requests, attempt by attempt (--json lists more):", style="bold")
        )
        for trace in traces:
            console.print(Text(f"  {_path(trace)}"))

    rate = len(result.outcomes) / result.elapsed if result.elapsed else 0
    console.print(f"{len(result.outcomes)} requests in {result.elapsed:.2f} s ({rate:.0f} req/s)")
    for level, text in verdict_lines(result):
        console.print(Text(f"{level.upper():<5}", style=_STYLE[level]) + Text(text))
    console.print(
        Text("verdict: PASS", style="bold green")
        if result.passed
        else Text("verdict: FAIL", style="bold red")
    )
