"""``llmsim probe URL``: send chat traffic through a gateway and verify how it was spread.

Each request is traced (:mod:`cluster.traffic`); who answered is read from the response
(:mod:`cluster.responses`) and, when the instances' journals can be read, from them
(:mod:`cluster.journals`, :mod:`cluster.reconcile`): so errors are attributed to the instance that
produced them, or to the gateway, and retries, failover and hedging become visible. Which
instances should get traffic comes from :mod:`cluster.inventory`; when that is unknown, the
verdict says so instead of passing silently.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmsim_cluster import ClusterError, gateway_args, inventory, journals, reconcile, routing
from llmsim_cluster.gateway_args import UsageError, target_url
from llmsim_cluster.probe_report import render_report, report_json
from llmsim_cluster.traffic import CONN, Outcome, new_run_id, run_traffic

UNKNOWN = reconcile.UNKNOWN
GATEWAY = reconcile.GATEWAY


@dataclass
class Result:
    url: str
    outcomes: list[Outcome]
    distribution: routing.Distribution | None
    affinity: routing.Affinity | None
    max_error_rate: float
    stream: bool
    elapsed: float
    inventory: inventory.Inventory = field(default_factory=inventory.Inventory)
    journals: list[journals.Journal] = field(default_factory=list)
    reconciliation: reconcile.Reconciliation | None = None
    strict: bool = False
    run_id: str = ""

    def attributed(self, outcome: Outcome) -> str:
        """The instance behind an outcome: from the response, else the journals; GATEWAY or UNKNOWN."""
        story = self.reconciliation.stories.get(outcome.trace) if self.reconciliation else None
        if story is not None:
            who = story.answered_by if outcome.ok else story.blamed
            if who:
                return who
        return outcome.instance or UNKNOWN

    @property
    def error_rate(self) -> float:
        return sum(not o.ok for o in self.outcomes) / max(1, len(self.outcomes))

    @property
    def journals_complete(self) -> bool:
        return bool(self.journals) and all(j.complete for j in self.journals)

    @property
    def warnings(self) -> list[str]:
        """What keeps the verdict from being sure; ``--strict`` turns each into a failure."""
        found = []
        inv = self.inventory
        if not inv.known:
            seen = len({self.attributed(o) for o in self.outcomes} - {UNKNOWN, GATEWAY})
            found.append(
                f"instance set unknown: assumed the {seen} instance(s) that answered are all there are "
                "(give --instances or --run-dir)"
            )
        found += inv.notes
        if inv.known and not inv.targets():
            found.append(
                "no instance journal to read (give --instances as URLs, or --run-dir): "
                "retries, failover and attribution not checked"
            )
        for journal in self.journals:
            if journal.problem:
                found.append(f"journal of {journal.instance}: {journal.problem}")
        return found

    @property
    def passed(self) -> bool:
        checks = [self.error_rate <= self.max_error_rate]
        if self.distribution is not None:
            checks.append(self.distribution.passed)
        if self.affinity is not None:
            checks.append(self.affinity.passed)
        if self.strict:
            checks.append(not self.warnings)
        return all(checks)


def _sent(outcomes: list[Outcome]) -> list[reconcile.Sent]:
    return [reconcile.Sent(o.trace, o.started, o.ok, o.status, o.instance) for o in outcomes]


def evaluate(
    url: str,
    outcomes: list[Outcome],
    *,
    weights: dict[str, float] | None,
    check_distribution: bool,
    inv: inventory.Inventory,
    alpha: float,
    max_error_rate: float,
    stream: bool,
    elapsed: float,
    collected: list[journals.Journal] | None = None,
    strict: bool = False,
    run_id: str = "",
) -> Result:
    """The verdict from what the client saw and, when there are any, the instances' journals."""
    collected = collected or []
    result = Result(
        url, outcomes, None, None, max_error_rate, stream, elapsed, inv, collected, None, strict, run_id
    )
    readable = {j.instance: j.entries for j in collected if j.read}
    if readable:
        complete = inv.known and inv.count is None and all(j.complete for j in collected)
        complete = complete and len(collected) == len(inv.members)
        result.reconciliation = reconcile.reconcile(_sent(outcomes), readable, complete)
    who = [result.attributed(o) for o in outcomes]
    served = Counter(w for w in who if w not in (UNKNOWN, GATEWAY))
    expected = inv.expected()
    if check_distribution:
        if weights is not None:
            named = expected if isinstance(expected, list) else sorted(served)
            weights = routing.complete_weights(weights, named)
        result.distribution = routing.distribution(served, alpha, weights, expected)
    pairs = [
        (o.session, w)
        for o, w in zip(outcomes, who, strict=True)
        if o.session and w not in (UNKNOWN, GATEWAY)
    ]
    result.affinity = routing.affinity(pairs) if any(o.session for o in outcomes) else None
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmsim probe",
        description="Send chat requests (OpenAI or Anthropic) through a gateway and verify how it "
        "spread them across llmsim instances. Exit code: 0 verdict passed, 1 a check failed (or, "
        "with --strict, a warning), 2 usage error or unreachable URL.",
    )
    gateway_args.add_arguments(p)
    p.add_argument("--requests", "-n", type=int, default=200, help="requests to send (default 200)")
    p.add_argument("--concurrency", "-c", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--stream", action="store_true", help="stream responses; also reports TTFT")
    p.add_argument(
        "--expect",
        help="'uniform' (the default without --sticky-header) or weights such as sim-1=3,sim-2=1",
    )
    p.add_argument(
        "--alpha", type=float, default=0.01, help="significance level of the chi-square test (0.01)"
    )
    p.add_argument("--sticky-header", metavar="NAME", help="check session affinity on this header instead")
    p.add_argument(
        "--sessions", type=int, default=10, help="distinct session values with --sticky-header (10)"
    )
    p.add_argument(
        "--max-error-rate", type=float, default=0.0, help="fraction of failed requests still passing (0.0)"
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of tables")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return gateway_args.run("llmsim probe", lambda: _run(args), (UsageError, ClusterError))


def _run(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.concurrency < 1 or args.sessions < 1:
        raise UsageError("--requests, --concurrency and --sessions must be at least 1")
    if not 0 < args.alpha < 1:
        raise UsageError("--alpha must be between 0 and 1")
    api = gateway_args.chosen_api(args)
    url = target_url(args.url, api)
    try:
        weights = routing.parse_expect(args.expect) if args.expect else None
    except ValueError as exc:
        raise UsageError(f"--expect: {exc}") from None
    check_distribution = args.expect is not None or not args.sticky_header
    inv = inventory.resolve(args.instances, args.run_dir, args.admin_token)
    headers = gateway_args.headers(args.header, args.api_key, api)
    console = Console() if Console().is_terminal else Console(width=120)
    run_id = new_run_id()
    targets = inv.targets()
    before = asyncio.run(journals.totals(targets, inv.token)) if targets else {}

    started = time.perf_counter()
    with Progress(
        TextColumn("probing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.json,
    ) as progress:
        task = progress.add_task("probe", total=args.requests)
        outcomes = asyncio.run(
            run_traffic(
                url,
                args.requests,
                args.concurrency,
                run_id=run_id,
                api=api,
                model=gateway_args.chosen_model(args),
                stream=args.stream,
                headers=headers,
                sticky_header=args.sticky_header,
                sessions=args.sessions,
                timeout=args.timeout,
                on_done=lambda: progress.advance(task),
            )
        )
    elapsed = time.perf_counter() - started
    if all(o.failure == CONN for o in outcomes):
        raise UsageError(f"could not reach {url}: {outcomes[0].detail}")
    collected = asyncio.run(journals.collect(targets, f"{run_id}-", inv.token, before)) if targets else []

    result = evaluate(
        url,
        outcomes,
        weights=weights,
        check_distribution=check_distribution,
        inv=inv,
        alpha=args.alpha,
        max_error_rate=args.max_error_rate,
        stream=args.stream,
        elapsed=elapsed,
        collected=collected,
        strict=args.strict,
        run_id=run_id,
    )
    if args.json:
        sys.stdout.write(json.dumps(report_json(result), indent=2) + "\n")
    else:
        render_report(result, console)
    return 0 if result.passed else 1
