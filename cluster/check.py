"""``llmsim check URL``: a scorecard of what a gateway does when its backends fail.

Each scenario (:mod:`cluster.scenarios`) breaks one instance on purpose through its control API
or supervisord, sends traced traffic through the gateway at URL, reconciles what the client saw
with what every instance journaled, restores the instance, and gives a verdict with the figures
behind it. Exit code: 0 no scenario failed, 1 one did (or warned, with ``--strict``), 2 a usage
error or an unreachable gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import Any
from xml.etree import ElementTree

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmsim_cluster import ClusterError, gateway_args, inventory, routing, traffic
from llmsim_cluster.gateway_args import UsageError, target_url
from llmsim_cluster.scenarios import ERROR, FAIL, PASS, SCENARIOS, SKIP, WARN, Options, Score
from llmsim_cluster.testbed import Testbed, TestbedError

STYLE = {PASS: "green", WARN: "yellow", FAIL: "red", SKIP: "dim", ERROR: "magenta"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmsim check",
        description="Run failure scenarios through a gateway in front of llmsim instances and score how "
        "it handled each. Exit code: 0 no scenario failed, 1 one failed (or warned, with --strict), "
        "2 usage error or unreachable gateway.",
    )
    gateway_args.add_arguments(p)
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma list to run (default: all): {', '.join(SCENARIOS)}",
    )
    p.add_argument("--requests", "-n", type=int, default=40, help="requests a scenario sends (40)")
    p.add_argument("--concurrency", "-c", type=int, default=8, help="requests in flight (8)")
    p.add_argument("--target", help="the instance to break (default: the first)")
    p.add_argument("--retry-after", type=float, default=2.0, help="Retry-After of rate-limit/overload (2s)")
    p.add_argument(
        "--ttft-bound", type=float, default=2.0, help="timeout scenario: the slow instance takes 3x this (2s)"
    )
    p.add_argument(
        "--heal-wait",
        type=float,
        default=15.0,
        help="seconds to wait for a healed instance to get traffic again (the gateway's cooldown; 15)",
    )
    p.add_argument("--expect", help="distribution: 'uniform' (default) or weights such as sim-1=3,sim-2=1")
    p.add_argument("--sticky-header", metavar="NAME", help="affinity: the session header")
    p.add_argument("--alpha", type=float, default=0.01, help="distribution: significance level (0.01)")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    p.add_argument("--junit", metavar="FILE", help="also write the scorecard as JUnit XML, for CI")
    return p


def _scenarios(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise UsageError(
            f"--scenarios: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(SCENARIOS)}"
        )
    return names


async def _reachable(bed: Testbed) -> None:
    outcomes = await traffic.run_traffic(
        bed.url, 1, 1, api=bed.api, model=bed.model, headers=bed.headers, timeout=bed.timeout
    )
    if outcomes[0].status is None:
        raise UsageError(f"could not reach {bed.url}: {outcomes[0].detail}")


async def run_check(
    bed: Testbed, names: list[str], options: Options, progress: Progress | None = None
) -> list[Score]:
    await _reachable(bed)
    scores = []
    task = progress.add_task("check", total=len(names)) if progress else None
    for name in names:
        if progress is not None and task is not None:
            progress.update(task, description=f"{name:<14}")
        started = time.perf_counter()
        try:
            score = await SCENARIOS[name](bed, options)
        except (TestbedError, LookupError, ClusterError) as exc:
            score = Score(name, ERROR, str(exc))
        score.figures["seconds"] = round(time.perf_counter() - started, 2)
        scores.append(score)
        if progress is not None and task is not None:
            progress.advance(task)
    return scores


def _figures_text(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict) or key == "seconds":
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


def render(scores: list[Score], bed: Testbed, console: Console) -> None:
    inv = bed.inventory
    members = ", ".join(f"{m.id}" for m in inv.members) or "none"
    console.print(f"[bold]llmsim check[/] {escape(bed.url)}  instances: {escape(members)}"
                  f" ({escape(inv.source or 'unknown set')})", highlight=False)  # fmt: skip
    if inv.stopped:
        console.print(f"stopped: {escape(', '.join(f'{k} ({v})' for k, v in inv.stopped.items()))}")
    for note in inv.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    table = Table(show_lines=False, pad_edge=False)
    for column in ("scenario", "verdict", "why", "figures"):
        table.add_column(column, overflow="fold")
    for score in scores:
        style = STYLE.get(score.verdict, "")
        table.add_row(
            score.scenario,
            f"[{style}]{score.verdict.upper()}[/]",
            escape(score.summary),
            escape(_figures_text(score.figures)),
        )
    console.print(table)
    for score in scores:
        for sample in score.samples:
            console.print(f"  [dim]{escape(score.scenario)} sample:[/] {escape(sample)}", highlight=False)


def junit(scores: list[Score], url: str) -> bytes:
    failures = sum(s.verdict == FAIL for s in scores)
    errors = sum(s.verdict == ERROR for s in scores)
    skipped = sum(s.verdict == SKIP for s in scores)
    suite = ElementTree.Element(
        "testsuite",
        name="llmsim check",
        tests=str(len(scores)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=str(sum(s.figures.get("seconds", 0) for s in scores)),
    )
    for score in scores:
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"llmsim.check.{url}", name=score.scenario,
            time=str(score.figures.get("seconds", 0)),
        )  # fmt: skip
        if score.verdict == FAIL:
            ElementTree.SubElement(case, "failure", message=score.summary).text = "\n".join(score.samples)
        elif score.verdict == ERROR:
            ElementTree.SubElement(case, "error", message=score.summary)
        elif score.verdict == SKIP:
            ElementTree.SubElement(case, "skipped", message=score.summary)
        out = ElementTree.SubElement(case, "system-out")
        out.text = f"{score.verdict}: {score.summary}\n{json.dumps(score.figures, default=str)}"
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def exit_code(scores: list[Score], strict: bool, known: bool) -> int:
    verdicts = {s.verdict for s in scores}
    if FAIL in verdicts or ERROR in verdicts:
        return 1
    if strict and (WARN in verdicts or not known):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = (UsageError, ClusterError)
    return gateway_args.run(
        "llmsim check", lambda: _run(args), errors, "interrupted; the instances were restored"
    )


def _run(args: argparse.Namespace) -> int:
    if args.requests < 2 or args.concurrency < 1:
        raise UsageError("--requests must be at least 2 and --concurrency at least 1")
    names = _scenarios(args.scenarios)
    try:
        weights = routing.parse_expect(args.expect) if args.expect else None
    except ValueError as exc:
        raise UsageError(f"--expect: {exc}") from None
    inv = inventory.resolve(args.instances, args.run_dir, args.admin_token)
    if not [m for m in inv.members if m.url]:
        raise UsageError(
            "check needs the instances behind the gateway: run it beside `llmsim cluster up` "
            "(or give --run-dir) or list their URLs with --instances"
        )
    api = gateway_args.chosen_api(args)
    bed = Testbed(
        target_url(args.url, api),
        inv,
        gateway_args.chosen_model(args),
        gateway_args.headers(args.header, args.api_key, api),
        args.concurrency,
        args.timeout,
        api=api,
    )
    options = Options(
        requests=args.requests,
        target=args.target,
        retry_after=args.retry_after,
        ttft_bound=args.ttft_bound,
        expect=weights,
        sticky_header=args.sticky_header,
        alpha=args.alpha,
        heal_wait=args.heal_wait,
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} scenarios"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json,
    )
    with progress:
        scores = asyncio.run(run_check(bed, names, options, progress))
    if args.junit:
        with open(args.junit, "wb") as handle:
            handle.write(junit(scores, bed.url))
    if args.json:
        payload = {
            "url": bed.url,
            "instances": [m.id for m in inv.members],
            "instances_source": inv.source,
            "stopped": inv.stopped,
            "notes": inv.notes,
            "scores": [asdict(s) for s in scores],
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        console = Console() if Console().is_terminal else Console(width=140)
        render(scores, bed, console)
    return exit_code(scores, args.strict, inv.known)
