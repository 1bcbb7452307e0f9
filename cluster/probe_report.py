"""How a probe result is shown: rich tables and a bar chart for people, JSON for CI."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cluster.routing import percentile

if TYPE_CHECKING:
    from cluster.probe import Outcome, Result

UNKNOWN = "unknown"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _rows(result: Result) -> list[dict[str, Any]]:
    by_instance: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in result.outcomes:
        by_instance[outcome.instance].append(outcome)
    dist = result.distribution
    names = list(dist.counts) if dist else sorted(k for k in by_instance if k != UNKNOWN)
    names += [k for k in sorted(by_instance) if k not in names and k != UNKNOWN]
    if UNKNOWN in by_instance:
        names.append(UNKNOWN)
    total = len(result.outcomes)
    identified = sum(len(v) for k, v in by_instance.items() if k != UNKNOWN)
    rows = []
    for name in names:
        group = by_instance.get(name, [])
        latencies = [o.latency for o in group if o.ok]
        ttfts = [o.ttft for o in group if o.ttft is not None]
        share = len(group) / identified if identified and name != UNKNOWN else None
        expected = dist.expected_share.get(name, 0.0) if dist and name != UNKNOWN else None
        errors = Counter(str(o.status) if o.status is not None else "conn" for o in group if not o.ok)
        rows.append(
            {
                "instance": name,
                "requests": len(group),
                "share": share,
                "expected_share": expected,
                "deviation": None if share is None or expected is None else share - expected,
                "latency_ms": {f"p{q}": _ms(percentile(latencies, q)) for q in (50, 95, 99)},
                "ttft_ms": {f"p{q}": _ms(percentile(ttfts, q)) for q in (50, 95, 99)}
                if result.stream
                else None,
                "errors": dict(errors),
                "of_total": len(group) / total if total else 0.0,
            }
        )
    return rows


def _verdict(result: Result) -> list[tuple[bool, str]]:
    lines = []
    dist = result.distribution
    if dist is not None:
        what = "a uniform spread" if len(set(dist.expected_share.values())) <= 1 else "the expected weights"
        text = f"distribution vs {what}: chi-square p = {dist.p_value:.4g} (alpha {dist.alpha})"
        if dist.starved:
            text += f"; got nothing: {', '.join(dist.starved)}"
        if dist.unnamed_slots:
            text += f"; {dist.unnamed_slots} expected instance(s) never answered"
        if dist.extra:
            text += f"; {len(dist.counts)} instances answered, {len(dist.counts) - dist.extra} expected"
        if dist.unexpected:
            text += f"; unexpected: {', '.join(dist.unexpected)}"
        lines.append((dist.passed, text))
    aff = result.affinity
    if aff is not None:
        bad = aff.violations
        text = f"session affinity: {len(aff.sessions) - len(bad)}/{len(aff.sessions)} sessions stayed on one instance"
        if bad:
            sample = "; ".join(f"{s} -> {', '.join(sorted(c))}" for s, c in list(bad.items())[:3])
            text += f" (violations: {sample})"
        lines.append((aff.passed, text))
    failed = sum(not o.ok for o in result.outcomes)
    lines.append(
        (
            result.error_rate <= result.max_error_rate,
            f"errors: {failed}/{len(result.outcomes)} ({result.error_rate:.1%}, allowed {result.max_error_rate:.1%})",
        )
    )
    return lines


def report_json(result: Result) -> dict[str, Any]:
    dist = result.distribution
    aff = result.affinity
    return {
        "url": result.url,
        "passed": result.passed,
        "requests": len(result.outcomes),
        "elapsed_s": round(result.elapsed, 3),
        "requests_per_s": round(len(result.outcomes) / result.elapsed, 1) if result.elapsed else None,
        "error_rate": result.error_rate,
        "instances": _rows(result),
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
        "verdict": [{"passed": ok, "check": text} for ok, text in _verdict(result)],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_report(result: Result, console: Console) -> None:
    rows = _rows(result)
    table = Table(title=f"llmsim probe: {result.url} (latencies in ms)", title_justify="left")
    table.add_column("instance", no_wrap=True)
    for column in (
        "reqs",
        "share",
        "expect",
        "dev",
        "p50",
        "p95",
        "p99",
        *(["ttft50"] if result.stream else []),
    ):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("errors")
    for row in rows:
        deviation = row["deviation"]
        cells = [
            row["instance"],
            str(row["requests"]),
            _pct(row["share"]),
            _pct(row["expected_share"]),
            "-" if deviation is None else f"{deviation:+.1%}",
            *(_fmt_ms(row["latency_ms"][k]) for k in ("p50", "p95", "p99")),
        ]
        if result.stream:
            cells.append(_fmt_ms(row["ttft_ms"]["p50"]))
        cells.append(", ".join(f"{k}×{v}" for k, v in sorted(row["errors"].items())) or "-")
        table.add_row(*cells, style="dim" if row["requests"] == 0 else None)
    console.print(table)

    width = 40
    largest = max((r["of_total"] for r in rows), default=0) or 1
    label = max((len(r["instance"]) for r in rows), default=8)
    for row in rows:
        bar = "█" * round(row["of_total"] / largest * width)
        line = Text(f"{row['instance']:<{label}} ")
        line.append(bar or "·", style="cyan" if row["instance"] != UNKNOWN else "yellow")
        line.append(f" {row['of_total']:.1%}")
        console.print(line)

    rate = len(result.outcomes) / result.elapsed if result.elapsed else 0
    console.print(f"{len(result.outcomes)} requests in {result.elapsed:.2f} s ({rate:.0f} req/s)")
    for ok, text in _verdict(result):
        console.print(Text("PASS " if ok else "FAIL ", style="bold green" if ok else "bold red") + Text(text))
    console.print(
        Text("verdict: PASS", style="bold green")
        if result.passed
        else Text("verdict: FAIL", style="bold red")
    )
