"""The stages every API surface shares, written once.

A surface parses its wire format into a :class:`GenerationRequest` and renders events back;
between the two, :class:`Engine` applies, in order: auth, overrides, content (with usage), faults,
rate limits, the queue, the latency plan, and then paces what the surface renders. Everything a
stage learns about a request lives on its :class:`Turn`, which the outer :class:`Pipeline` reads
for the accounting (stats, metrics, access log).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from itertools import groupby
from operator import itemgetter
from typing import Any

from starlette.types import Receive, Scope, Send

from llmsim import latency, limits, tokens
from llmsim.auth import Authenticator, KeyInfo, load_keys
from llmsim.content import Content
from llmsim.errors import APIError, Kind
from llmsim.faults import Fault, FaultPolicy, FaultType
from llmsim.generation import Generation, GenerationRequest, PromptCache, generate
from llmsim.latency import Overrides, Pacer, Plan, overrides_from
from llmsim.metrics import Metrics
from llmsim.presence import ClientGone, Presence
from llmsim.scheduler import Scheduler
from llmsim.script import Script
from llmsim.settings import Settings
from llmsim.surfaces.base import OPENAI, Wire
from llmsim.workers import in_thread

_FAULT_HEADER = b"x-llmsim-fault"
# A slow fault on an instance without latency still has to be slow: this is the TTFT it multiplies.
SLOW_BASE_S = 0.1


@dataclass(slots=True)
class Turn:
    """One request on its way through the shared stages."""

    arrived: float
    key: KeyInfo | None
    overrides: Overrides
    fault_header: bytes | None
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    fault: Fault | None = None
    plan: Plan = latency.INSTANT
    queued_s: float = 0.0
    limit: limits.LimitState = limits.UNLIMITED
    pacer: Pacer | None = None
    acquired: bool = False
    presence: Presence | None = None
    stream: bool = False
    events: int | None = None  # SSE events sent, for a stream
    wire: Wire = OPENAI  # the surface's rate-limit headers and mid-stream fault events


class Engine:
    def __init__(self, settings: Settings, instance_id: str) -> None:
        self.instance_id = instance_id
        self.scheduler = Scheduler(settings.max_concurrency, settings.max_queue, settings.queue_full_status)
        self.metrics = Metrics(
            instance_id,
            settings.models,
            lambda: self.scheduler.running,
            lambda: self.scheduler.waiting,
            settings.max_concurrency,
        )
        # OpenAI's automatic prompt cache of this instance (kept across configuration changes).
        self.prompt_cache = PromptCache()
        # What this instance remembers between requests (caches, stores: each has ``clear()``),
        # forgotten by /llmsim/reset; a surface adds its own (llmsim.surfaces.registry).
        self.memories: list[Any] = [self.prompt_cache]
        self.faults = FaultPolicy(
            seed=settings.fault_seed,
            after=settings.fault_after,
            hang=settings.timeout_hang,
            slow_factor=settings.slow_factor,
        )
        # The operator's files as last loaded: a PATCH rereads them only when asked to (configure).
        self._profiles: latency.ProfileFile
        self._file_keys: dict[str, KeyInfo]
        self._script_file: Script | None
        self.configure(settings)

    def configure(
        self, settings: Settings, reload: frozenset[str] = frozenset(), *, commit: bool = True
    ) -> Callable[[], None]:
        """Apply settings; at runtime (PATCH /llmsim/config) they take effect for new requests.

        All or nothing: every new piece (files, latency model, content, auth, limits, fault
        values) is built first, and swapped in only when all were built, so a rejected PATCH
        leaves the engine as it was. Operator files are read at start, then only when named in
        ``reload`` (``script``, ``profiles``, ``api_keys_file``). ``commit=False`` returns the swap
        instead of running it: the control API builds in a worker thread, swaps on the event loop.
        """
        previous: Settings | None = getattr(self, "settings", None)

        def changed(*names: str) -> bool:
            return previous is None or any(getattr(previous, n) != getattr(settings, n) for n in names)

        fresh = previous is None
        profiles = (
            latency.load_profiles(settings.profiles) if fresh or "profiles" in reload else self._profiles
        )
        file_keys = (
            load_keys((), settings.api_keys_file) if fresh or "api_keys_file" in reload else self._file_keys
        )
        if fresh or "script" in reload:
            script_file = Script(settings.script) if settings.script else None
        else:
            script_file = self._script_file
        # Inline rules win over the file; the file stays loaded for when they are removed.
        script = Script.inline(settings.script_rules) if settings.script_rules is not None else script_file
        latency_model = latency.from_settings(settings, profiles)
        content = Content(settings, script)
        names = [t.strip() for t in (settings.failure_types or "").split(",") if t.strip()]
        fault_types = tuple(FaultType(name) for name in names)  # checked by Settings; raises before the swap
        keys = [k.strip() for k in (settings.api_keys or "").split(",") if k.strip()]
        auth = Authenticator({**load_keys(keys), **file_keys})  # the file's entry wins, as before
        rate_limits = (
            limits.RateLimits(settings.rpm, settings.tpm, limits.parse_tier_limits(settings.tier_limits))
            if changed("rpm", "tpm", "tier_limits")
            else self.limits  # keep the buckets (and what clients have spent) across other changes
        )
        # Restart the fail-first count only when it is (re)set, not on every other change.
        fail_first = settings.fail_first if changed("fail_first") else None
        reseed = not fresh and changed("fault_seed")

        def swap() -> None:  # plain assignments and validated values: cannot fail halfway
            self.settings = settings
            self.models = frozenset(settings.models)
            self._profiles, self._file_keys, self._script_file = profiles, file_keys, script_file
            self.latency, self.content, self.auth, self.limits = latency_model, content, auth, rate_limits
            faults = self.faults
            faults.after, faults.hang, faults.slow_factor = (
                settings.fault_after,
                settings.timeout_hang,
                settings.slow_factor,
            )
            if reseed:
                faults.rng.seed(settings.fault_seed)
            faults.configure(rate=settings.failure_rate, types=fault_types, fail_first=fail_first)
            faults.retry_after = self.scheduler.retry_after = settings.retry_after
            self.scheduler.max_queue = settings.max_queue
            self.scheduler.full_status = settings.queue_full_status

        if commit:
            swap()
        return swap

    # --- stages --------------------------------------------------------------------------------

    def admit(self, scope: Scope) -> Turn:
        """Before the body is read: who is asking (401 otherwise) and what the headers ask for."""
        headers = scope["headers"]
        key = self.auth.check(headers)
        ours = [(k, v) for k, v in headers if k.startswith(b"x-llmsim-")]  # usually none
        fault_header = next((v for k, v in ours if k == _FAULT_HEADER), None) if ours else None
        turn = Turn(
            time.monotonic(), key, overrides_from(ours) if ours else latency.NO_OVERRIDES, fault_header
        )
        wire = scope.get("llmsim.surface")
        if wire is not None:
            turn.wire = wire
        scope["llmsim.turn"] = turn
        return turn

    async def begin(
        self,
        scope: Scope,
        receive: Receive,
        turn: Turn,
        request: GenerationRequest,
        draft: Callable[[GenerationRequest], Generation] | None = None,
    ) -> Generation:
        """Generation (content and usage), then admission; raises what the client gets.

        ``draft`` makes the Generation from the request with this turn's overrides applied, in
        place of :func:`generate` (completions: one generation a prompt, merged)."""
        # The request may be shared (a surface's cache of identical bodies): change a copy.
        if turn.overrides.output_tokens is not None:
            request = replace(request, output_tokens=turn.overrides.output_tokens)
        if turn.overrides.usage is not None:
            request = replace(request, usage=turn.overrides.usage)
        if self.content.script is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            request = replace(request, headers=headers)
        turn.model, turn.stream = request.model, request.stream
        presence = turn.presence = Presence(receive)
        cache = self.prompt_cache
        make = draft or partial(generate, content=self.content, cache=cache)
        if _heavy(request, self.settings.output_tokens):
            generation = await presence.wait(in_thread(make, request))
        else:
            generation = make(request)
        # Usage as reported (an override's too): what limits, metrics and the journal count.
        turn.completion_tokens = generation.completion_tokens
        turn.finish_reason = generation.choices[0].finish_reason
        estimate = limits.estimate_tokens(generation.prompt_tokens, request.max_tokens, request.n)
        await self.admission(
            scope,
            receive,
            turn,
            request.model,
            generation.prompt_tokens,
            estimate,
            generation.longest,
            cached_tokens=generation.cached_tokens,
            hidden_tokens=generation.reasoning_steps,
        )
        cache.store(generation.prefixes)  # prefilled now: a later request with its prefix hits
        return generation

    async def admission(
        self,
        scope: Scope,
        receive: Receive,
        turn: Turn,
        model: str,
        prompt_tokens: int,
        token_estimate: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        hidden_tokens: int = 0,
    ) -> None:
        """Faults, rate limits, the queue and the latency plan, for any surface: one that generates
        no tokens (embeddings) comes here straight, with ``output_tokens`` 0 (a prefill-only plan).

        ``token_estimate`` is what the request counts against TPM before it runs; ``cached_tokens``
        of the prompt (a prompt-cache hit) cost no prefill, ``hidden_tokens`` (reasoning) are decoded
        before the first token."""
        turn.model = model
        turn.prompt_tokens = prompt_tokens
        presence = turn.presence
        if presence is None:
            presence = turn.presence = Presence(receive)
        fault = self.faults.pick(turn.fault_header, turn.stream)
        if fault is not None:
            turn.fault = fault
            if fault.immediate:
                raise self.faults.error_for(fault, model, prompt_tokens, turn.overrides.retry_after)

        if self.limits.enabled:
            identity = turn.key.key if turn.key else _client(scope)
            try:
                turn.limit = self.limits.check(
                    identity,
                    turn.key.tier if turn.key else None,
                    token_estimate,
                    time.monotonic(),
                    model=model,
                    org=turn.key.org if turn.key else None,
                )
            except APIError as exc:
                self.metrics.rate_limited(exc.data.get("bucket", "requests"))
                raise

        scheduler = self.scheduler
        if not scheduler.try_acquire():
            waiting_since = time.monotonic()
            slot = scheduler.enqueue()
            try:
                await presence.wait(slot)  # the queue wait is part of the time to first token
            except BaseException:
                scheduler.abandon(slot)
                raise
            turn.queued_s = time.monotonic() - waiting_since
        turn.acquired = True
        slowdown = 1 + self.settings.slowdown * scheduler.load
        plan = self.latency.plan(
            model, prompt_tokens, output_tokens, turn.overrides, slowdown, cached_tokens, hidden_tokens
        )
        if fault is not None and fault.type is FaultType.slow:
            plan = replace(
                plan, prefill=(plan.prefill or SLOW_BASE_S) * (fault.factor or self.faults.slow_factor)
            )
        turn.plan = plan
        if not plan.instant:
            # The clock starts at arrival, not after parsing: under a burst, the work of the
            # requests ahead is time this one spent "prefilling", as on a real server.
            turn.pacer = Pacer(plan, presence, turn.arrived + turn.queued_s)
        if fault is not None and fault.type is FaultType.timeout:
            # Accept, then say nothing until the client gives up or the hang time passes.
            await presence.sleep(fault.hang if fault.hang is not None else self.faults.hang)
            raise APIError(504, kind=Kind.TIMEOUT)

    def end(self, turn: Turn) -> None:
        if turn.acquired:
            self.scheduler.release()
            turn.acquired = False
        if turn.presence is not None:
            turn.presence.close()

    # --- sending -------------------------------------------------------------------------------

    async def respond(self, turn: Turn, send: Send, payload: bytes, content_type: bytes) -> None:
        """A whole body, after the whole simulated generation."""
        if turn.pacer is not None:
            await turn.pacer.until(len(turn.pacer.deadlines) - 1)
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))]
        if turn.limit is not limits.UNLIMITED:
            headers += turn.wire.limit_headers(turn.limit)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self._observe(turn)

    async def stream(
        self, turn: Turn, send: Send, headers: list[tuple[bytes, bytes]], events: Iterator[tuple[int, bytes]]
    ) -> None:
        """Events paced by generation step; mid-stream faults strike here, for every surface."""
        if turn.limit is not limits.UNLIMITED:
            headers = headers + turn.wire.limit_headers(turn.limit)
        # Headers go out at once, as a provider's do; the first event waits for its token.
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        fault = turn.fault if turn.fault is not None and turn.fault.mid_stream else None
        strike = fault.after if fault is not None and fault.after is not None else self.faults.after
        pacer = turn.pacer
        sent = turn.events = 0
        # Events of one generation step (the role and first token, the last token and the
        # finish) leave in one write.
        for position, step in groupby(events, key=itemgetter(0)):
            if pacer is not None:
                try:
                    await pacer.until(position)
                except ClientGone:  # stop generating, free the slot; count what was sent
                    turn.completion_tokens = min(turn.completion_tokens, position)
                    raise
            if fault is not None and sent >= strike:
                if fault.type is FaultType.disconnect:
                    if turn.wire.cut_event is not None:
                        await send(
                            {"type": "http.response.body", "body": turn.wire.cut_event, "more_body": True}
                        )
                    raise _Disconnect
                malformed = turn.wire.malformed_event
                await send({"type": "http.response.body", "body": malformed, "more_body": True})
                fault = None
                turn.events = sent = sent + 1
            chunks = [event for _, event in step]
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
            turn.events = sent = sent + len(chunks)  # SSE events, as a client counts them
        await send({"type": "http.response.body", "body": b""})
        self._observe(turn)

    def _observe(self, turn: Turn) -> None:
        model, plan = turn.model, turn.plan
        self.metrics.queue_time(model, turn.queued_s)
        self.metrics.first_token(model, turn.queued_s + plan.prefill)
        self.metrics.inter_token(model, plan.itls)


class _Disconnect(Exception):
    """A disconnect fault: drop the connection mid-stream."""


ENDED_EARLY = (ClientGone, _Disconnect)

# Requests whose text to tokenize (prompt, plus each choice's answer at ~4 characters a token)
# passes this many characters are tokenized in a worker thread: tiktoken releases the GIL, so the
# event loop keeps answering while it counts. So are those with schemas to generate, and the
# first of a model whose vocabulary is not loaded yet.
HEAVY_CHARS = 64 * 1024


def _heavy(request: GenerationRequest, answer_tokens: int) -> bool:
    if request.tools or request.json_schema is not None or not tokens.for_model(request.model).ready:
        return True
    answer_tokens = request.output_tokens or answer_tokens
    if request.usage is not None and request.usage.completion is not None:  # x-llmsim-usage's length
        answer_tokens = max(answer_tokens, request.usage.completion)
    size = 0
    for message in request.messages:
        for text in message.texts:
            size += len(text)
    return size + request.n * (size + 4 * answer_tokens) > HEAVY_CHARS


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def turn_of(scope: Scope) -> Turn | None:
    return scope.get("llmsim.turn")
