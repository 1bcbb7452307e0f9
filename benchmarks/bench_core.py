"""Core simulator throughput against its floors, side by side in one run.

Non-streaming: bare ASGI floor vs ``llmsim serve`` (echo mode, defaults), with one identical body on
every request (chat.lua: llmsim's validated-body and token-count caches answer) and with a
different body on every request (chat_unique.lua: they cannot).
Streaming (50 SSE events a response): bare Starlette StreamingResponse floor vs sse-starlette's
EventSourceResponse vs ``llmsim serve --response-mode lorem --output-tokens 47``.
Realistic mix: a seeded corpus of varied chat bodies (corpus.py; chat_mix.lua cycles through it),
bare ASGI floor answering each the shape it asks for vs the lorem-47 server; prompt tokens a second.
Anthropic Messages (issue 13): the same echo and lorem servers asked through POST /v1/messages with the
same request (messages.lua, messages_unique.lua, messages_stream.lua: 47 tokens, 53 named events), each
row held to the floor of its OpenAI twin; the "other surfaces / OpenAI chat" table compares the twins
(PEER_TARGETS: Anthropic >= 0.9). Issue 14 adds Responses (responses.lua, responses_stream.lua: 55
named events), embeddings (embeddings.lua, one input of 1,536 floats) and legacy completions (completions.lua) the same
way (Responses and embeddings >= 0.85; completions shown without a target).

Servers are pinned to the first CPU, wrk to the second. Knobs (environment): BENCH_DURATION
(seconds a run, 8), BENCH_REPEATS (runs a case, best kept, 2), BENCH_CONNECTIONS (64),
BENCH_LLMSIM_SRC (a directory put first on PYTHONPATH of the llmsim servers, to bench a copy),
BENCH_COMPARE_SRC (another llmsim tree, e.g. a `git worktree` of an older commit: its servers run
beside the current ones, every llmsim case twice), BENCH_COMPARE_LABEL (its label, "before"),
BENCH_MIX_BODIES (bodies in the mix's corpus, 1000), BENCH_MIX_SEED (11), BENCH_PAIRS (paired runs
of each held surface and its chat twin, 6), BENCH_PAIR_DURATION (seconds a paired run, 2).

Paired runs: after the rounds, each surface held to a target runs alternately with its chat twin
on the same server (chat first, then the surface first, and so on), BENCH_PAIRS times; the verdict
is the median of the pairs' ratios. The machine is shared: its speed swings by 25 % within a
minute, which a ratio of two runs seconds apart mostly cancels and best ÷ best does not.
"""

from __future__ import annotations

import datetime
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import corpus
import harness
import httpx
from floors import ANTHROPIC_STREAM_EVENTS, CONTENT_TOKENS, STREAM_EVENTS, STREAM_MARKER
from rich.console import Console
from rich.markup import escape
from rich.table import Table

TARGETS = {"non-streaming": 0.4, "streaming": 0.6}
# Each other surface's row against its OpenAI chat twin (same server, same floor): Anthropic within
# 10 % (issue 13), Responses and embeddings within 15 % (issue 14); completions is shown, not held.
PEER_TARGETS = {"anthropic": 0.9, "responses": 0.85, "embeddings": 0.85}
# Per API: the path, extra headers, and what a whole body says it is (Anthropic's "type", else "object").
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-bench"}
APIS = {
    "openai": ("/v1/chat/completions", {}, "chat.completion"),
    "anthropic": ("/v1/messages", ANTHROPIC_HEADERS, "message"),
    "responses": ("/v1/responses", {}, "response"),
    "embeddings": ("/v1/embeddings", {}, "list"),
    "completions": ("/v1/completions", {}, "text_completion"),
}
# created, in_progress, output_item.added, content_part.added, the deltas, output_text.done,
# content_part.done, output_item.done, completed.
RESPONSES_STREAM_EVENTS = CONTENT_TOKENS + 8
HISTORY = {
    "non-streaming": "cc14514/llm-simulator 0.155x, best Python peer 0.19x",
    "streaming": "sse-starlette EventSourceResponse 0.52x",
}
WARMUP_S = 2.0
MIX_TIMEOUT_S = 10.0  # wrk's request timeout for the mix (its default 2 s), for a slow old tree
MIX_CORPUS = harness.RESULTS / "mix_corpus.jsonl"
COMPARE_CHECK_BODIES = 100  # mix bodies whose prompt tokens the compared tree must count the same


@dataclass
class Case:
    group: str  # "non-streaming", "streaming" or "realistic mix"
    name: str
    server: harness.Server
    script: str
    role: str  # "floor", "llmsim" or "reference"
    events: int = 1  # SSE events a response (1 for non-streaming)
    script_args: tuple[str, ...] = ()
    timeout_s: float | None = None
    twin: str | None = None  # a compared tree's case: the name of the current case it mirrors
    api: str = "openai"  # a key of APIS: "openai" is /v1/chat/completions
    peer: str | None = None  # another surface's case: the name of its OpenAI chat twin (same server)


@dataclass
class Mix:
    lines: list[str]
    tokens: list[int] = field(default_factory=list)  # prompt tokens of each body, from usage

    @property
    def mean_tokens(self) -> float:
        return statistics.fmean(self.tokens) if self.tokens else 0.0


def _uvicorn(name: str, app: str) -> harness.Server:
    # The options llmsim's `serve` passes to uvicorn.run (llmsim/cli.py _serve), loop/http auto.
    argv = [sys.executable, "-m", "uvicorn", f"floors:{app}", "--app-dir", str(harness.HERE)]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "info"]
    argv += ["--no-access-log", "--no-server-header"]
    return harness.Server(name, argv, ready_path="/")


def _llmsim(name: str, *flags: str, src: str | None = None) -> harness.Server:
    env = {}
    src = src or os.environ.get("BENCH_LLMSIM_SRC")
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "llmsim", "serve", "--port", "{port}", *flags]
    return harness.Server(name, argv, env=env)


def compare_tree() -> tuple[str, str] | None:
    """(source directory, label) of the tree to compare with, when BENCH_COMPARE_SRC asks for one."""
    src = os.environ.get("BENCH_COMPARE_SRC")
    if not src:
        return None
    if not (Path(src) / "llmsim" / "__init__.py").is_file():
        sys.exit(f"BENCH_COMPARE_SRC={src}: no llmsim/ package there")
    return str(Path(src).resolve()), os.environ.get("BENCH_COMPARE_LABEL", "before")


def cases() -> list[Case]:
    lorem = ("--response-mode", "lorem", "--output-tokens", str(STREAM_EVENTS - 3))
    mix_args = (str(MIX_CORPUS),)

    def llmsim_cases(
        echo: harness.Server, lorem_server: harness.Server, suffix: str = "", surfaces: bool = False
    ) -> list[Case]:
        # One echo and one lorem server a tree: the cases of a server share it (and its caches).
        # Other surfaces' cases (current tree only) follow their OpenAI twins, so a round runs them
        # back to back.
        def twin(
            group: str,
            name: str,
            server: harness.Server,
            script: str,
            peer: str,
            events: int = 1,
            *,
            api: str = "anthropic",
        ):
            if not surfaces:
                return []
            return [Case(group, name, server, script, "llmsim", events, api=api, peer=peer)]

        return [
            Case("non-streaming", "llmsim echo" + suffix, echo, "chat.lua", "llmsim"),
            *twin("non-streaming", "llmsim echo, Anthropic", echo, "messages.lua", "llmsim echo"),
            *twin(
                "non-streaming",
                "llmsim echo, Responses",
                echo,
                "responses.lua",
                "llmsim echo",
                api="responses",
            ),
            *twin(
                "non-streaming",
                "llmsim embeddings, 1 input",
                echo,
                "embeddings.lua",
                "llmsim echo",
                api="embeddings",
            ),
            *twin(
                "non-streaming",
                "llmsim echo, legacy completions",
                echo,
                "completions.lua",
                "llmsim echo",
                api="completions",
            ),
            Case("non-streaming", "llmsim echo, unique bodies" + suffix, echo, "chat_unique.lua", "llmsim"),
            *twin(
                "non-streaming",
                "llmsim echo, unique bodies, Anthropic",
                echo,
                "messages_unique.lua",
                "llmsim echo, unique bodies",
            ),
            Case(
                "streaming",
                "llmsim lorem 47 tokens" + suffix,
                lorem_server,
                "chat_stream.lua",
                "llmsim",
                STREAM_EVENTS,
            ),
            *twin(
                "streaming",
                "llmsim lorem 47 tokens, Anthropic",
                lorem_server,
                "messages_stream.lua",
                "llmsim lorem 47 tokens",
                ANTHROPIC_STREAM_EVENTS,
            ),
            *twin(
                "streaming",
                "llmsim lorem 47 tokens, Responses",
                lorem_server,
                "responses_stream.lua",
                "llmsim lorem 47 tokens",
                RESPONSES_STREAM_EVENTS,
                api="responses",
            ),
            Case(
                "realistic mix",
                "llmsim lorem 47, mix" + suffix,
                lorem_server,
                "chat_mix.lua",
                "llmsim",
                script_args=mix_args,
                timeout_s=MIX_TIMEOUT_S,
            ),
        ]

    current = llmsim_cases(_llmsim("llmsim-echo"), _llmsim("llmsim-lorem", *lorem), surfaces=True)
    compared: list[Case] = []
    tree = compare_tree()
    if tree:
        src, label = tree
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") or "compare"
        compared = llmsim_cases(
            _llmsim(f"{slug}-llmsim-echo", src=src),
            _llmsim(f"{slug}-llmsim-lorem", *lorem, src=src),
            f" ({label})",
        )
        openai = [case for case in current if case.api == "openai"]
        for mine, twin in zip(compared, openai, strict=True):
            mine.twin = twin.name
    by_group: dict[str, list[Case]] = {}
    for case in current + compared:
        by_group.setdefault(case.group, []).append(case)
    plain = _uvicorn("floor-plain", "plain")
    stream_floor = _uvicorn("floor-stream", "streaming_messages")
    return [
        Case("non-streaming", "floor: bare ASGI", plain, "chat.lua", "floor"),
        # The floor ignores the body: this shows wrk's per-request Lua is not what limits.
        Case("non-streaming", "floor: bare ASGI, unique bodies", plain, "chat_unique.lua", "reference"),
        *by_group["non-streaming"],
        Case(
            "streaming", "floor: StreamingResponse", stream_floor, "chat_stream.lua", "floor", STREAM_EVENTS
        ),
        # The same floor answering /v1/messages with Anthropic's 53 events: what the shape alone costs.
        Case(
            "streaming",
            "floor: StreamingResponse, Anthropic events",
            stream_floor,
            "messages_stream.lua",
            "reference",
            ANTHROPIC_STREAM_EVENTS,
            api="anthropic",
            peer="floor: StreamingResponse",
        ),
        Case(
            "streaming",
            "sse-starlette EventSource",
            _uvicorn("floor-sse", "sse"),
            "chat_stream.lua",
            "reference",
            STREAM_EVENTS,
        ),
        *by_group["streaming"],
        Case(
            "realistic mix",
            "floor: bare ASGI, mix",
            _uvicorn("floor-mixed", "mixed"),
            "chat_mix.lua",
            "floor",
            script_args=mix_args,
            timeout_s=MIX_TIMEOUT_S,
        ),
        *by_group["realistic mix"],
    ]


def lua_body(script: str) -> bytes:
    """The request body a wrk script sends (its ``wrk.body = [[...]]``, or its ``template = [[...]]``
    with the tag filled in), so httpx sends the same."""
    text = (harness.HERE / script).read_text()
    body = re.search(r"(?:wrk\.body|local template) = \[\[(.*?)\]\]", text, re.S).group(1)
    return body.replace(corpus.TAG, corpus.CHECK_TAG).encode()


def _post(case: Case, body: bytes) -> httpx.Response:
    path, extra, _ = APIS[case.api]
    headers = {"content-type": "application/json", **extra}
    response = httpx.post(case.server.url + path, content=body, headers=headers, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"{case.name}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def _check_events(case: Case, response: httpx.Response, console: Console) -> None:
    events = sum(1 for line in response.text.splitlines() if line.startswith("data:"))
    console.print(
        f"  {escape(case.name)}: {events} SSE data events a response, {len(response.content)} bytes"
    )
    if events != STREAM_EVENTS:
        raise RuntimeError(f"{case.name}: expected {STREAM_EVENTS} SSE events, got {events}")


def _check_named_events(case: Case, response: httpx.Response, console: Console) -> None:
    """Anthropic's stream: 53 named events for 47 tokens, each an ``event:`` and a ``data:`` line,
    in Anthropic's order; Responses': 55, response.created to response.completed."""
    lines = response.text.splitlines()
    names = [line.removeprefix("event:").strip() for line in lines if line.startswith("event:")]
    data = sum(1 for line in lines if line.startswith("data:"))
    console.print(
        f"  {escape(case.name)}: {len(names)} SSE events ({data} data lines) a response, "
        f"{len(response.content)} bytes"
    )
    if case.api == "responses":
        expected = ["response.created", "response.in_progress", "response.output_item.added"]
        expected += ["response.content_part.added"] + ["response.output_text.delta"] * CONTENT_TOKENS
        expected += ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
        expected += ["response.completed"]
    else:
        expected = ["message_start", "content_block_start", "ping"]
        expected += ["content_block_delta"] * CONTENT_TOKENS
        expected += ["content_block_stop", "message_delta", "message_stop"]
    assert len(expected) == case.events
    if names != expected or data != len(expected):
        raise RuntimeError(
            f"{case.name}: expected {len(expected)} named events (message_start ... message_stop), "
            f"got {len(names)} ({data} data lines): {names[:4]} ... {names[-3:]}"
        )


def _check_completion(case: Case, response: httpx.Response, console: Console) -> None:
    body = response.json()
    kind = body.get("type") if case.api == "anthropic" else body.get("object")
    console.print(f"  {escape(case.name)}: {kind}, {len(response.content)} bytes")
    if kind != APIS[case.api][2]:
        raise RuntimeError(f"{case.name}: unexpected body {response.text[:300]}")


def check(case: Case, console: Console, mix: Mix) -> None:
    """One request with httpx: a 200 of the right kind, and the number of SSE events. For the mix,
    a streamed and a plain body; llmsim's servers also count every body's prompt tokens (usage)."""
    if case.group != "realistic mix":
        response = _post(case, lua_body(case.script))
        if case.group == "streaming" and case.api != "openai":
            _check_named_events(case, response, console)
        elif case.group == "streaming":
            _check_events(case, response, console)
        else:
            _check_completion(case, response, console)
        return
    streamed = next(line for line in mix.lines if STREAM_MARKER.decode() in line)
    _check_events(case, _post(case, corpus.for_check(streamed)), console)
    _check_completion(case, _post(case, corpus.for_check(streamed, stream=False)), console)
    if case.role != "llmsim":
        return
    if case.twin is None:
        mix.tokens = [_prompt_tokens(case, line) for line in mix.lines]
        other = _prompt_tokens(case, mix.lines[0], tag="987654321098")
        if other != mix.tokens[0]:
            raise RuntimeError(f"{case.name}: the tag changes the prompt tokens ({mix.tokens[0]} vs {other})")
        tokens = sorted(mix.tokens)
        console.print(
            f"  {escape(case.name)}: prompt tokens of the {len(tokens)} bodies: mean {mix.mean_tokens:.0f}, "
            f"median {tokens[len(tokens) // 2]}, p90 {tokens[len(tokens) * 9 // 10]}, "
            f"p99 {tokens[len(tokens) * 99 // 100]}, min {tokens[0]}, max {tokens[-1]}"
        )
    else:  # the compared tree must bill the same prompt tokens
        n = min(COMPARE_CHECK_BODIES, len(mix.lines))
        theirs = [_prompt_tokens(case, line) for line in mix.lines[:n]]
        differ = sum(1 for a, b in zip(theirs, mix.tokens[:n], strict=True) if a != b)
        colour = "red" if differ else "green"
        console.print(
            f"  {escape(case.name)}: [{colour}]{differ} of the first {n} bodies count other prompt tokens"
        )


def _prompt_tokens(case: Case, line: str, tag: str = corpus.CHECK_TAG) -> int:
    return _post(case, corpus.for_check(line, tag, stream=False)).json()["usage"]["prompt_tokens"]


def main() -> None:
    console = Console(width=max(Console().width, 180))
    duration = float(os.environ.get("BENCH_DURATION", "8"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "64"))
    mix_bodies = int(os.environ.get("BENCH_MIX_BODIES", "1000"))
    mix_seed = int(os.environ.get("BENCH_MIX_SEED", "11"))
    pairs = int(os.environ.get("BENCH_PAIRS", "6"))
    pair_s = float(os.environ.get("BENCH_PAIR_DURATION", "2"))
    wrk = harness.ensure_wrk()
    server_pin, wrk_pin = harness.cpu_pins()
    all_cases = cases()
    servers = list({id(case.server): case.server for case in all_cases}.values())
    mix = Mix(corpus.build(mix_bodies, mix_seed))
    corpus.write(MIX_CORPUS, mix.lines)
    runs: dict[str, list[harness.WrkResult]] = {case.name: [] for case in all_cases}
    paired: dict[str, list[float]] = {case.name: [] for case in held(all_cases)}
    console.rule("[bold]core: llmsim vs floors")
    console.print(
        f"server pinned: {' '.join(server_pin) or 'no'}; wrk pinned: {' '.join(wrk_pin) or 'no'}; "
        f"wrk -t1 -c{connections} -d{duration:g}s, {repeats} round(s), best kept; "
        f"mix: {len(mix.lines)} bodies (seed {mix_seed}) in {MIX_CORPUS}"
    )
    tree = compare_tree()
    if tree:
        console.print(f"compared with [bold]{tree[1]}[/bold]: llmsim from {tree[0]}")

    def wrk_run(case: Case, seconds: float) -> harness.WrkResult:
        script = harness.HERE / case.script
        cpu_before = case.server.cpu_seconds()
        result = harness.run_wrk(
            wrk,
            wrk_pin,
            case.server.url,
            script,
            seconds,
            connections=connections,
            script_args=case.script_args,
            timeout_s=case.timeout_s,
        )
        cpu_after = case.server.cpu_seconds()
        if cpu_before is not None and cpu_after is not None:
            result.server_cpu_s = cpu_after - cpu_before
        return result

    try:
        for server in servers:
            server.start(server_pin)
        for server in servers:
            server.wait_ready()
        for case in all_cases:
            check(case, console, mix)
        for case in all_cases:
            wrk_run(case, WARMUP_S)
        for round_no in range(1, repeats + 1):
            for case in all_cases:
                result = wrk_run(case, duration)
                runs[case.name].append(result)
                console.print(
                    f"  round {round_no}  {escape(case.name):<40} {result.rps:>9.0f} req/s"
                    + (f" {result.per_cpu_s:>9.0f} req/CPU-s" if result.per_cpu_s else "")
                    + (f"  [red]{result.errors} errors[/red]" if result.errors else "")
                )
        by_name = {case.name: case for case in all_cases}
        for case in held(all_cases):
            peer = by_name[case.peer]
            for pair in range(pairs):
                order = (peer, case) if pair % 2 == 0 else (case, peer)
                rps = {c.name: wrk_run(c, pair_s).rps for c in order}
                if rps[peer.name]:
                    paired[case.name].append(rps[case.name] / rps[peer.name])
            console.print(
                f"  paired  {escape(case.name):<40} "
                + " ".join(f"{ratio:.2f}" for ratio in paired[case.name])
            )
    finally:
        for server in servers:
            server.stop()

    report = summarize(all_cases, runs, mix, paired)
    console.print(table(report))
    console.print(twins_table(report))
    if tree:
        console.print(compare_table(report, tree[1]))
    payload = {
        "date": datetime.date.today().isoformat(),
        "machine": harness.machine(),
        "wrk": {
            "threads": 1,
            "connections": connections,
            "duration_s": duration,
            "repeats": repeats,
            "pairs": pairs,
            "pair_duration_s": pair_s,
        },
        "pinning": {"server": server_pin, "wrk": wrk_pin},
        "targets": {**TARGETS, "surfaces_vs_chat": PEER_TARGETS},
        "history": HISTORY,
        "compare": {"src": tree[0], "label": tree[1]} if tree else None,
        "mix_corpus": {
            "seed": mix_seed,
            **corpus.describe(mix.lines),
            "prompt_tokens_mean": round(mix.mean_tokens, 1),
            "prompt_tokens_median": sorted(mix.tokens)[len(mix.tokens) // 2] if mix.tokens else None,
            "prompt_tokens_max": max(mix.tokens, default=None),
        },
        **report,
    }
    path = harness.write_results("core", payload)
    console.print(f"results written to {path}")


def held(all_cases: list[Case]) -> list[Case]:
    """The surfaces' cases held to a target against their chat twin."""
    return [c for c in all_cases if c.peer is not None and c.role == "llmsim" and c.api in PEER_TARGETS]


def summarize(
    all_cases: list[Case], runs: dict[str, list[harness.WrkResult]], mix: Mix, paired: dict[str, list[float]]
) -> dict:
    groups: dict[str, dict] = {}
    for case in all_cases:
        best = max(runs[case.name], key=lambda r: r.rps)
        per_cpu = [r.per_cpu_s for r in runs[case.name] if r.per_cpu_s]
        group = groups.setdefault(case.group, {"cases": []})
        mixed = case.group == "realistic mix" and case.role == "llmsim"
        group["cases"].append(
            {
                "name": case.name,
                "role": case.role,
                "server": case.server.name,
                "script": case.script,
                "twin": case.twin,
                "api": case.api,
                "peer": case.peer,
                "rps": round(best.rps, 1),
                "rps_runs": [round(r.rps, 1) for r in runs[case.name]],
                # Requests per CPU-second of the server, best run: steadier than req/s when other
                # work shares the server's CPU (it slows the server down, not each request).
                "per_cpu_s": round(max(per_cpu), 1) if per_cpu else None,
                "per_cpu_s_runs": [round(r.per_cpu_s or 0, 1) for r in runs[case.name]],
                "events_per_response": case.events,
                "chunks_per_s": round(best.rps * case.events, 1) if case.group == "streaming" else None,
                # Bodies are sent in corpus order, cycling: the corpus mean is the mean a request.
                "prompt_tokens_per_s": round(best.rps * mix.mean_tokens) if mixed else None,
                "prompt_tokens_per_cpu_s": round(max(per_cpu) * mix.mean_tokens)
                if mixed and per_cpu
                else None,
                "p50_ms": round(best.p50_ms, 2),
                "p99_ms": round(best.p99_ms, 2),
                "errors": best.errors,
            }
        )
    for name, group in groups.items():
        floor = next(c for c in group["cases"] if c["role"] == "floor")
        target = TARGETS.get(name)
        for c in group["cases"]:
            c["ratio_to_floor"] = round(c["rps"] / floor["rps"], 3) if floor["rps"] else None
            c["cpu_ratio_to_floor"] = (
                round(c["per_cpu_s"] / floor["per_cpu_s"], 3)
                if c["per_cpu_s"] and floor["per_cpu_s"]
                else None
            )
            if c["role"] == "llmsim" and target is not None:
                c["meets_target"] = bool(c["ratio_to_floor"] and c["ratio_to_floor"] >= target)
        llmsim = next(c for c in group["cases"] if c["role"] == "llmsim")
        group["llmsim_ratio"] = llmsim["ratio_to_floor"]
        group["target"] = target
        group["meets_target"] = llmsim.get("meets_target")
    return {"groups": groups, "surfaces_vs_chat": surfaces_vs_chat(all_cases, runs, groups, paired)}


def surfaces_vs_chat(
    all_cases: list[Case],
    runs: dict[str, list[harness.WrkResult]],
    groups: dict[str, dict],
    paired: dict[str, list[float]],
) -> list[dict]:
    """Each other surface's case against its OpenAI chat twin: both are held to the same floor, so the ratio of
    their ratios is the ratio of their req/s. Per round too, and the paired runs' median, which
    decides the target (best ÷ best when there are no paired runs)."""
    rows = []
    for case in all_cases:
        if case.peer is None:
            continue
        by_name = {c["name"]: c for c in groups[case.group]["cases"]}
        mine, theirs = by_name[case.name], by_name[case.peer]
        rounds = [a.rps / b.rps for a, b in zip(runs[case.name], runs[case.peer], strict=True) if b.rps]
        cpu_rounds = [
            a.per_cpu_s / b.per_cpu_s
            for a, b in zip(runs[case.name], runs[case.peer], strict=True)
            if a.per_cpu_s and b.per_cpu_s
        ]
        ratio = round(mine["rps"] / theirs["rps"], 3) if theirs["rps"] else None
        row = {
            "group": case.group,
            "name": case.name,
            "openai": case.peer,
            "role": case.role,
            "api": case.api,
            "openai_rps": theirs["rps"],
            "surface_rps": mine["rps"],
            "openai_ratio_to_floor": theirs["ratio_to_floor"],
            "surface_ratio_to_floor": mine["ratio_to_floor"],
            "ratio": ratio,
            "ratio_rounds": [round(r, 3) for r in rounds],
            "cpu_ratio": round(mine["per_cpu_s"] / theirs["per_cpu_s"], 3)
            if mine["per_cpu_s"] and theirs["per_cpu_s"]
            else None,
            "cpu_ratio_rounds": [round(r, 3) for r in cpu_rounds],
            "paired": [round(r, 3) for r in paired.get(case.name, [])],
            "paired_median": round(statistics.median(paired[case.name]), 3)
            if paired.get(case.name)
            else None,
        }
        target = PEER_TARGETS.get(case.api)
        if case.role == "llmsim" and target is not None:
            verdict = row["paired_median"] if row["paired_median"] is not None else ratio
            row["target"] = target
            row["meets_target"] = bool(verdict is not None and verdict >= target)
        rows.append(row)
    return rows


def twins_table(report: dict) -> Table:
    t = Table(
        title="Other surfaces / OpenAI chat: each row against its /v1/chat/completions twin (same floor)"
    )
    columns = ("case", "chat req/s", "surface req/s", "chat ratio", "surface ratio")
    columns += ("S / C", "S / C a round", "S / C a CPU-s", "paired median (min-max)", "target")
    for column in columns:
        t.add_column(column, justify="left" if column == "case" else "right", no_wrap=True)
    for row in report["surfaces_vs_chat"]:
        verdict = "(reference)"
        if "meets_target" in row:
            ok = row["meets_target"]
            verdict = f"[{'green' if ok else 'red'}]>= {row['target']} {'ok' if ok else 'MISS'}"
        t.add_row(
            escape(row["name"]),
            f"{row['openai_rps']:,.0f}",
            f"{row['surface_rps']:,.0f}",
            f"{row['openai_ratio_to_floor']:.3f}x",
            f"{row['surface_ratio_to_floor']:.3f}x",
            f"{row['ratio']:.3f}x" if row["ratio"] is not None else "-",
            "/".join(f"{r:.2f}" for r in row["ratio_rounds"]),
            f"{row['cpu_ratio']:.3f}x" if row["cpu_ratio"] is not None else "-",
            f"{row['paired_median']:.3f}x ({min(row['paired']):.2f}-{max(row['paired']):.2f})"
            if row["paired_median"] is not None
            else "-",
            verdict,
        )
    return t


def table(report: dict) -> Table:
    t = Table(title="llmsim vs floors: best run; ratio = req/s / the group's floor")
    columns = (
        "server",
        "req/s",
        "chunks/s",
        "prompt tok/s",
        "p50 ms",
        "err",
        "ratio",
        "req/CPU-s",
        "CPU ratio",
    )
    columns += ("target",)
    for column in columns:
        t.add_column(column, justify="left" if column == "server" else "right")
    for name, group in report["groups"].items():
        t.add_row(f"[bold]{name}", *[""] * (len(columns) - 1))
        for c in group["cases"]:
            verdict = ""
            if "meets_target" in c:
                ok = c["meets_target"]
                verdict = f"[{'green' if ok else 'red'}]{group['target']}x {'ok' if ok else 'MISS'}"
            t.add_row(
                "  " + escape(c["name"]),
                f"{c['rps']:,.0f}",
                f"{c['chunks_per_s']:,.0f}" if c["chunks_per_s"] is not None else "-",
                f"{c['prompt_tokens_per_s']:,.0f}" if c["prompt_tokens_per_s"] is not None else "-",
                f"{c['p50_ms']:.1f}",
                str(c["errors"]),
                f"{c['ratio_to_floor']:.3f}x",
                f"{c['per_cpu_s']:,.0f}" if c["per_cpu_s"] else "-",
                f"{c['cpu_ratio_to_floor']:.3f}x" if c["cpu_ratio_to_floor"] else "-",
                verdict,
            )
    return t


def compare_table(report: dict, label: str) -> Table:
    t = Table(title=f"current tree vs {label}: best runs, same run")
    columns = ("case", f"{label} req/s", "current req/s", f"current / {label}", f"{label} ratio", "ratio")
    columns += (f"current / {label}, per CPU-s", f"{label} CPU ratio", "CPU ratio")
    for column in columns:
        t.add_column(column, justify="left" if column == "case" else "right")
    for group in report["groups"].values():
        by_name = {c["name"]: c for c in group["cases"]}
        for theirs in group["cases"]:
            mine = by_name.get(theirs["twin"] or "")
            if mine is None:
                continue
            speedup = mine["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
            cpu = bool(mine["per_cpu_s"] and theirs["per_cpu_s"])
            t.add_row(
                escape(mine["name"]),
                f"{theirs['rps']:,.0f}",
                f"{mine['rps']:,.0f}",
                f"{speedup:.2f}x",
                f"{theirs['ratio_to_floor']:.3f}x",
                f"{mine['ratio_to_floor']:.3f}x",
                f"{mine['per_cpu_s'] / theirs['per_cpu_s']:.2f}x" if cpu else "-",
                f"{theirs['cpu_ratio_to_floor']:.3f}x" if cpu else "-",
                f"{mine['cpu_ratio_to_floor']:.3f}x" if cpu else "-",
            )
    return t


if __name__ == "__main__":
    main()
