"""The one request lifecycle every generating surface shares: :class:`Generate`.

A surface supplies only its wire format (:class:`Surface`): what it checks before the body, how
it parses a body into the neutral request, and how it answers a generation (a whole body or
paced events). Everything between (auth, the body read, the trace, parsing big bodies off the
loop, faults, limits, the queue, pacing, freeing the slot) is written here and in the Engine,
once. A new surface is one module with a Surface and its routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from llmsim import tokens
from llmsim.engine import HEAVY_CHARS, Engine, Turn
from llmsim.generation import Generation, GenerationRequest
from llmsim.journal import trace_in_body
from llmsim.surfaces.base import JSON, Headers, Wire, read_body
from llmsim.workers import in_thread

# Bodies past this size are parsed in a worker thread: pydantic and orjson hold the GIL while
# they work, but the event loop runs between their calls instead of waiting for all of them.
PARSE_IN_THREAD_BYTES = 1024 * 1024


@dataclass(slots=True)
class Reply:
    """A surface's answer: a whole body (``payload``), or SSE ``events`` the Engine paces, sent
    with ``headers`` (content-type and cache-control) as soon as the request is admitted."""

    payload: bytes = b""
    content_type: bytes = JSON
    events: Iterator[tuple[int, bytes]] | None = None
    headers: Headers = field(default_factory=list)


class Surface(Protocol):
    wire: Wire | None  # its error envelope and headers; None: OpenAI's, the default

    def check(self, scope: Scope) -> None:
        """Before the body is read: headers the provider requires (raises APIError)."""
        ...

    def parse(self, raw: bytes, models: frozenset[str]) -> tuple[Any, GenerationRequest]:
        """(the surface's own parsed request, the neutral one); raises APIError on bad input."""
        ...

    def reply(self, request: Any, generation: Generation, turn: Turn, instance: str) -> Reply: ...


class Generate:
    """A surface's generating route as a plain ASGI endpoint: no Request or Response objects and no
    disconnect-listener task per request; errors are raised and rendered once by the Pipeline."""

    def __init__(self, engine: Engine, surface: Surface) -> None:
        self.engine = engine
        self.handler = surface
        self.surface = surface.wire  # the Pipeline renders errors on this route with it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine, handler = self.engine, self.handler
        if handler.wire is not None:
            scope["llmsim.surface"] = handler.wire
        turn = engine.admit(scope)
        handler.check(scope)
        raw = await read_request(scope, receive)
        if len(raw) > PARSE_IN_THREAD_BYTES:
            request, neutral = await in_thread(handler.parse, raw, engine.models)
        else:
            request, neutral = handler.parse(raw, engine.models)
        try:
            generation = await engine.begin(scope, receive, turn, neutral)
            await answer(engine, turn, send, handler.reply(request, generation, turn, engine.instance_id))
        finally:
            engine.end(turn)


async def answer(engine: Engine, turn: Turn, send: Send, reply: Reply) -> None:
    """Send a surface's reply: events paced by the Engine, or the whole body."""
    if reply.events is not None:
        await engine.stream(turn, send, reply.headers, reply.events)
    else:
        await engine.respond(turn, send, reply.payload, reply.content_type)


async def read_request(scope: Scope, receive: Receive) -> bytes:
    """The whole body, and the trace token in it for the journal's entry."""
    raw = await read_body(receive)
    entry = scope.get("llmsim.entry")
    if entry is not None and entry.trace is None:
        entry.trace = trace_in_body(raw)
    return raw


class CountingEndpoint:
    """Base of a surface's own ASGI endpoint whose parse counts tokens (embeddings, completions):
    the engine, the surface (its ``wire`` for the Pipeline), and ``model_from``, which names the
    model from the scope (an Azure deployment path) instead of the body. ``vocabulary`` is a model
    whose encoding the surface's models share: until it is loaded, parsing runs off the loop."""

    vocabulary = "gpt-4o"
    default: Any = None  # the surface when none is given (a subclass's own)

    def __init__(
        self, engine: Engine, surface: Any = None, model_from: Callable[[Scope], str | None] | None = None
    ) -> None:
        self.engine = engine
        self.handler = surface if surface is not None else self.default
        self.surface = self.handler.wire  # the Pipeline renders errors on this route with it
        self.model_from = model_from

    async def parsed(self, scope: Scope, receive: Receive) -> Any:
        """The surface's parsed request; counting a large body, or the vocabulary's first load, runs
        in a worker thread (tiktoken releases the GIL)."""
        raw = await read_request(scope, receive)
        model = self.model_from(scope) if self.model_from is not None else None
        models = self.engine.models
        if len(raw) > HEAVY_CHARS or not tokens.for_model(model or self.vocabulary).ready:
            return await in_thread(self.handler.parse, raw, models, model)
        return self.handler.parse(raw, models, model)
