"""Azure OpenAI's data-plane paths over the OpenAI surfaces: the same wire formats, reached by
deployment, with Azure's additions and Azure's own errors.

- ``POST /openai/deployments/{deployment}/chat/completions`` (``/embeddings``, ``/completions``)
  with the required ``api-version`` query parameter (any value; without one Azure answers 404
  ``Resource not found``), and the v1 paths ``/openai/v1/chat/completions`` (``/embeddings``,
  ``/completions``), without one, whose body's ``model`` names the deployment.
- ``--azure-deployments name=model,...`` maps deployments to served models; by default every
  served model is a deployment of its own name. An unknown deployment is Azure's 404
  ``DeploymentNotFound``. On a deployment path the body's ``model`` is optional and ignored (the
  deployment decides); the response's ``model`` is the deployment's model.
- The key comes as ``api-key`` (Azure's header) or ``Authorization: Bearer`` (llmsim.auth).
- Chat and completions bodies carry Azure's content-filter annotations, all ``safe``:
  ``prompt_filter_results`` and each choice's ``content_filter_results``. A stream starts with
  Azure's annotation-only chunk (empty ``choices``, empty ``id``/``model``/``object``, ``created`` 0)
  and each chunk's choice carries ``content_filter_results`` (``{}`` on the role and finish
  chunks). Bodies are the OpenAI surfaces' own, annotated once (a whole body: one JSON round trip;
  a stream: one splice per event).
- Errors: Azure's ``{"error": {"code", "message"}}`` for what its gateway answers (a missing
  ``api-version``, an unknown deployment, a missing or wrong key, 429s worded as Azure words them,
  with ``retry-after``, ``retry-after-ms`` and ``x-ms-retry-after-ms``); everything else in
  OpenAI's envelope, as Azure passes the model's errors through. The request ID is also sent as
  ``apim-request-id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from llmsim.engine import Engine, Turn
from llmsim.errors import APIError, Kind, shorten
from llmsim.generation import Generation, GenerationRequest
from llmsim.surfaces import openai_chat, openai_completions, openai_embeddings
from llmsim.surfaces.base import OPENAI, Headers
from llmsim.surfaces.endpoint import Generate, Reply, Surface
from llmsim.surfaces.routes import JSON_ONLY, SSE_OR_JSON, RawRoute, post

if TYPE_CHECKING:
    from llmsim.limits import LimitState

API_VERSION = b"api-version"
V1 = "v1"  # the "API version" an Azure 429 names on the v1 paths
DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making "
    "requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
QUOTA = (
    "Requests to the {operation} Operation under Azure OpenAI API version {version} have exceeded {what} "
    "rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} second{s}. Please go "
    "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
)

# --- the deployments ---------------------------------------------------------------------------


def parse_deployments(spec: str | None) -> dict[str, str]:
    """``name=model,name2=model2`` as a dict; raises ValueError for a malformed pair."""
    table: dict[str, str] = {}
    for pair in (spec or "").split(","):
        if not pair.strip():
            continue
        name, sep, model = (part.strip() for part in pair.partition("="))
        if not sep or not name or not model:
            raise ValueError(f"expected name=model, got {shorten(pair.strip(), 64)!r}")
        if "/" in name or "?" in name or "#" in name:
            raise ValueError(f"deployment name {shorten(name, 64)!r}: '/', '?' and '#' cannot be in a path")
        table[name] = model
    return table


@lru_cache(maxsize=16)
def deployments(spec: str | None, models: frozenset[str]) -> Mapping[str, str]:
    """Deployment -> model: the setting's map, or every served model under its own name."""
    return parse_deployments(spec) if spec and spec.strip() else {model: model for model in models}


def _azure(status: int, code: str, message: str, kind: Kind = Kind.NOT_FOUND) -> APIError:
    # ``data["azure"]``: rendered as Azure's own {"error": {"code", "message"}} (AzureWire).
    return APIError(status, message, code=code, kind=kind, data={"azure": True})


def deployment_not_found() -> APIError:
    return _azure(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND)


def resource_not_found() -> APIError:
    """What Azure answers a path it does not serve, and a deployment path without ``api-version``."""
    return _azure(404, "404", "Resource not found")


def resolve(engine: Engine, deployment: str) -> str:
    """The model of ``deployment``; raises DeploymentNotFound."""
    model = deployments(engine.settings.azure_deployments, engine.models).get(deployment)
    if model is None:
        raise deployment_not_found()
    return model


class _Peek(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Any = None


def named_deployment(raw: bytes) -> str | None:
    """The body's ``model`` (a v1 path's deployment), or None: the surface then reports the body."""
    try:
        model = _Peek.model_validate_json(raw).model
    except ValidationError:
        return None
    return model if isinstance(model, str) else None


def with_model(raw: bytes, model: str) -> bytes:
    """The JSON object ``raw`` with ``"model": model`` as its last member, which wins over one the
    body has (JSON parsers here keep a repeated key's last value); anything else unchanged, for the
    surface's parser to report."""
    body = raw.strip()
    if len(body) < 2 or body[0] != 0x7B or body[-1] != 0x7D:  # { ... }
        return raw
    member = b'"model":' + orjson.dumps(model) + b"}"
    inner = body[1:-1].strip()
    return b"{" + member if not inner else body[:-1] + b"," + member


def api_version(query: bytes) -> str | None:
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == API_VERSION and value:
            return unquote_to_bytes(value.replace(b"+", b" ")).decode("latin-1")
    return None


# --- the wire: Azure's errors and headers ------------------------------------------------------


class AzureWire:
    """Azure's wire: OpenAI's (whose rendering it post-processes), but for Azure's own errors, the
    401 and 429 bodies, ``x-ms-retry-after-ms`` and ``apim-request-id``. One per request on a
    deployment path: a 429 names the operation and the request's ``api-version``."""

    __slots__ = ("operation", "version")
    request_id_header = b"apim-request-id"
    malformed_event = OPENAI.malformed_event
    cut_event = OPENAI.cut_event

    def __init__(self, operation: str, version: str = V1) -> None:
        self.operation = operation
        self.version = version

    def render_error(self, error: APIError, request_id: bytes) -> tuple[int, bytes, Headers]:
        status, body, headers = OPENAI.render_error(error, request_id)
        azure = self._message(error, status, headers)
        if azure is None:
            return status, body, headers
        body = orjson.dumps({"error": {"code": azure[0], "message": azure[1]}})
        out: Headers = [(b"content-length", b"%d" % len(body))]
        for name, value in headers:
            if name == b"content-length":
                continue
            out.append((name, value))
            if name == b"retry-after-ms":
                out.append((b"x-ms-retry-after-ms", value))
        return status, body, out

    def _message(self, error: APIError, status: int, headers: Headers) -> tuple[str, str] | None:
        """(code, message) of an error Azure words itself; None: OpenAI's as it is."""
        if error.data.get("azure"):
            return error.code or str(status), error.message
        if error.kind is Kind.AUTH and status == 401:
            return "401", INVALID_KEY if error.data.get("key") is not None else MISSING_KEY
        if status == 429 and not error.message:  # the limiter's, the queue's, a fault's
            seconds = next((int(v) for k, v in headers if k == b"retry-after" and v.isdigit()), 1)
            message = QUOTA.format(
                operation=self.operation,
                version=self.version,
                what="token" if error.data.get("bucket") == "tokens" else "call",
                seconds=seconds,
                s="" if seconds == 1 else "s",
            )
            return "429", message
        return None

    @staticmethod
    def limit_headers(state: LimitState) -> Headers:
        return OPENAI.limit_headers(state)


# --- content-filter annotations ------------------------------------------------------------------

_SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
CHOICE_FILTER = {
    "hate": _SAFE,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
CHUNK_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": PROMPT_FILTER}]
# The first event of an Azure stream: the prompt's annotations alone.
FIRST_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
    )
    + b"\n\n"
)
_CHOICES = b'"choices":[{'
_WITH_FILTER = _CHOICES + b'"content_filter_results":' + orjson.dumps(CHUNK_FILTER) + b","
_WITH_EMPTY = _CHOICES + b'"content_filter_results":{},'


def annotate(payload: bytes) -> bytes:
    """A chat.completion or text_completion body with Azure's filter results."""
    body = orjson.loads(payload)
    body["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    for choice in body.get("choices", ()):
        choice["content_filter_results"] = CHOICE_FILTER
    return orjson.dumps(body)


def annotate_event(event: bytes) -> bytes:
    """One SSE chunk with its choice's ``content_filter_results``: the results on a chunk with
    content, ``{}`` on the role, tool-call and finish chunks; the usage chunk (no choice) and
    ``[DONE]`` as they are. Each chunk has one choice, and a JSON string never holds an unescaped
    quote, so the first ``"choices":[{`` is the array's."""
    if _CHOICES not in event:
        return event
    empty = b'"delta":{"role"' in event or b'"delta":{"tool_calls"' in event or b'"finish_reason":"' in event
    return event.replace(_CHOICES, _WITH_EMPTY if empty else _WITH_FILTER, 1)


def annotated_stream(events: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    yield 0, FIRST_CHUNK
    for step, event in events:
        yield step, annotate_event(event)


# --- generating surfaces (chat, completions) on a deployment ------------------------------------


class Deployed:
    """An OpenAI generating surface (chat, completions) for one request on an Azure path: the
    deployment's model goes into the body before the surface parses it, and its answer gets
    Azure's annotations. ``wire`` None: the request's Azure wire is already in the scope."""

    __slots__ = ("base", "deployment", "engine", "model")
    wire = None

    def __init__(self, base: Surface, engine: Engine, deployment: str | None) -> None:
        self.base = base
        self.engine = engine
        self.deployment = deployment  # None: a v1 path, whose body names it
        self.model: str | None = None

    def check(self, scope: Scope) -> None:
        if self.deployment is not None:  # after auth, before the body: Azure's order
            self.model = resolve(self.engine, self.deployment)
        self.base.check(scope)

    def parse(self, raw: bytes, models: frozenset[str]) -> tuple[Any, GenerationRequest]:
        model = self.model
        if model is None:
            deployment = named_deployment(raw)
            if deployment is None:
                return self.base.parse(raw, models)  # the surface's own error for a missing model
            model = resolve(self.engine, deployment)
        return self.base.parse(with_model(raw, model), models)

    def reply(self, request: Any, generation: Generation, turn: Turn, instance: str) -> Reply:
        reply = self.base.reply(request, generation, turn, instance)
        if reply.events is not None:
            reply.events = annotated_stream(reply.events)
        else:
            reply.payload = annotate(reply.payload)
        return reply


# --- the operations and their routes ---------------------------------------------------------------


class Operation:
    """One Azure operation (``ChatCompletions_Create`` …): how a request on its paths is served."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path  # after /openai/deployments/{deployment} and /openai/v1

    def endpoint(self, engine: Engine) -> Callable[[Scope, Receive, Send, str | None], Any]:
        raise NotImplementedError


class Generating(Operation):
    def __init__(self, name: str, path: str, surface: Surface) -> None:
        super().__init__(name, path)
        self.surface = surface

    def endpoint(self, engine: Engine) -> Callable[[Scope, Receive, Send, str | None], Any]:
        surface = self.surface

        async def serve(scope: Scope, receive: Receive, send: Send, deployment: str | None) -> None:
            await Generate(engine, Deployed(surface, engine, deployment))(scope, receive, send)

        return serve


class ByModel(Operation):
    """A surface whose endpoint takes the model as an argument (embeddings' ``Embed``,
    completions' ``Complete``): the deployment's model, from the path or, on a v1 path, from the
    deployment the body names; its answer annotated (``annotated``) as Azure annotates it."""

    def __init__(
        self, name: str, path: str, surface: type, endpoint: type, request: type[BaseModel], annotated: bool
    ) -> None:
        super().__init__(name, path)
        self.surface_class, self.endpoint_class = surface, endpoint
        self.request = request
        self.annotated = annotated

    def endpoint(self, engine: Engine) -> Callable[[Scope, Receive, Send, str | None], Any]:
        annotated = self.annotated

        class OnAzure(self.surface_class):  # type: ignore[name-defined,misc]
            wire = None  # the request's Azure wire is in the scope

            def parse(self, raw: bytes, models: frozenset[str], model: str | None = None) -> Any:
                if model is None and (deployment := named_deployment(raw)) is not None:
                    model = resolve(engine, deployment)
                return super().parse(raw, models, model)

            def reply(self, job: Any, generation: Generation, turn: Turn, instance: str) -> Reply:
                reply = super().reply(job, generation, turn, instance)
                if annotated:
                    if reply.events is not None:
                        reply.events = annotated_stream(reply.events)
                    else:
                        reply.payload = annotate(reply.payload)
                return reply

        surface = OnAzure()
        by_path = self.endpoint_class(
            engine, surface, lambda scope: resolve(engine, scope["path_params"]["deployment"])
        )
        by_body = self.endpoint_class(engine, surface)

        async def serve(scope: Scope, receive: Receive, send: Send, deployment: str | None) -> None:
            await (by_body if deployment is None else by_path)(scope, receive, send)

        return serve


CHAT = Generating("ChatCompletions_Create", "/chat/completions", openai_chat.CHAT)
EMBEDDINGS = ByModel(
    "Embeddings_Create",
    "/embeddings",
    openai_embeddings.EmbeddingsSurface,
    openai_embeddings.Embed,
    openai_embeddings.EmbeddingRequest,
    annotated=False,  # Azure's embeddings carry no filter results
)
COMPLETIONS = ByModel(
    "Completions_Create",
    "/completions",
    openai_completions.CompletionsSurface,
    openai_completions.Complete,
    openai_completions.CompletionRequest,
    annotated=True,
)
OPERATIONS = (CHAT, EMBEDDINGS, COMPLETIONS)


class AzureEndpoint:
    """One Azure path: checks ``api-version`` (deployment paths), puts the request's Azure wire in
    the scope, and hands the request to its operation."""

    def __init__(self, engine: Engine, operation: Operation, v1: bool) -> None:
        self.serve = operation.endpoint(engine)
        self.operation = operation.name
        self.v1 = v1
        self.surface = AzureWire(operation.name)  # the Pipeline renders errors on a v1 path with it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.v1:
            scope["llmsim.surface"] = self.surface
            await self.serve(scope, receive, send, None)
            return
        version = api_version(scope["query_string"])
        scope["llmsim.surface"] = AzureWire(self.operation, version or "")
        if version is None:
            raise resource_not_found()
        await self.serve(scope, receive, send, scope["path_params"]["deployment"])


# --- routes and their descriptions -------------------------------------------------------------


class AzureChatCompletionRequest(openai_chat.ChatCompletionRequest):
    """A chat completion on a deployment path: ``model`` optional, the deployment decides."""

    model: str | None = Field(  # type: ignore[assignment]
        None, description="Ignored: the deployment in the path names the model."
    )


DEPLOYMENT_PARAMETERS = [
    {
        "name": "deployment",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A deployment (`--azure-deployments`; by default every served model's name).",
    },
    {
        "name": "api-version",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "examples": ["2024-10-21"]},
        "description": "Any version; without one the answer is Azure's 404 `Resource not found`.",
    },
]
STATUSES = (400, 401, 404, 413, 429, 500, 503, 504)
DESCRIBED = {
    "ChatCompletions_Create": (
        "Create a chat completion (Azure OpenAI)",
        "azure_chat_completion",
        "A `chat.completion` with Azure's `prompt_filter_results` and `content_filter_results`; with "
        '`"stream": true` Azure\'s annotation chunk, then `chat.completion.chunk` events, then '
        "`data: [DONE]`.",
    ),
    "Embeddings_Create": (
        "Create embeddings (Azure OpenAI)",
        "azure_embedding",
        "A `list` of `embedding` objects.",
    ),
    "Completions_Create": (
        "Create a completion (Azure OpenAI)",
        "azure_completion",
        "A `text_completion` with Azure's filter results; streamed like chat.",
    ),
}


def _request_model(operation: Operation, v1: bool) -> type[BaseModel]:
    if isinstance(operation, ByModel):
        return operation.request  # its model is optional already (a path may name it)
    return openai_chat.ChatCompletionRequest if v1 else AzureChatCompletionRequest


def routes(engine: Engine) -> list[RawRoute]:
    made: list[RawRoute] = []
    for operation in OPERATIONS:
        summary, operation_id, answer = DESCRIBED[operation.name]
        content = JSON_ONLY if operation is EMBEDDINGS else SSE_OR_JSON
        for v1 in (False, True):
            path = ("/openai/v1" if v1 else "/openai/deployments/{deployment}") + operation.path
            route = post(
                path,
                AzureEndpoint(engine, operation, v1),
                _request_model(operation, v1),
                tag="Azure OpenAI",
                summary=summary,
                operation_id=operation_id + ("_v1" if v1 else ""),
                description=(
                    "Azure OpenAI's v1 path: the body's `model` names the deployment; no `api-version`."
                    if v1
                    else "Azure OpenAI's deployment path: the deployment names the model."
                )
                + " Key as `api-key` or `Authorization: Bearer`. Azure's own errors (`DeploymentNotFound`, "
                '401, 429 with `retry-after-ms` and `x-ms-retry-after-ms`) in `{"error": {"code", '
                '"message"}}`; others in OpenAI\'s envelope.',
                answer=answer,
                statuses=STATUSES,
                content=content,
                envelope="Azure's or OpenAI's",
            )
            if not v1:
                route.operation["parameters"] = DEPLOYMENT_PARAMETERS
            made.append(route)
    return made
