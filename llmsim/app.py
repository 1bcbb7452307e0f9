"""Builds the ASGI app from Settings: a FastAPI application (its routes, ``/docs`` and
``/openapi.json``) inside the shared Pipeline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llmsim import __version__
from llmsim import api_models as api
from llmsim.control import Control
from llmsim.engine import Engine
from llmsim.errors import APIError
from llmsim.identity import resolve_instance_id
from llmsim.journal import Journal
from llmsim.pipeline import Pipeline
from llmsim.settings import Settings
from llmsim.stats import Stats
from llmsim.surfaces import anthropic_messages, registry
from llmsim.surfaces import models as models_surface
from llmsim.surfaces.routes import REF, FixedPaths, RawRoute, body, errors

log = logging.getLogger("llmsim")

ERROR = {"model": api.ErrorResponse}
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**ERROR, "description": "Invalid request"},
    401: {**ERROR, "description": "The admin token is missing or wrong"},
    403: {**ERROR, "description": "The control API is off, or answers on loopback only"},
}


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


class ApiRoute(APIRoute):
    """A described route whose handler runs in FastAPI. A parameter FastAPI validates and finds
    wrong is answered like every other invalid input: 400 in the OpenAI envelope, naming it.
    ``schemas``: models its ``openapi_extra`` references (a body its handler reads itself)."""

    def __init__(self, *args: Any, schemas: Sequence[type[BaseModel]] = (), **kwargs: Any) -> None:
        # HEAD wherever GET is, as HTTP has it and Starlette's own routes do (a load balancer's
        # health check may send `HEAD /health`); uvicorn leaves the body out.
        if "GET" in kwargs.get("methods", ()):
            kwargs["methods"] = [*kwargs["methods"], "HEAD"]
        super().__init__(*args, **kwargs)
        self.schemas = tuple(schemas)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What FastAPI's AsyncExitStackMiddleware gives each request (the app's middleware stack
        # is not run: see create_app), for these routes only.
        async with AsyncExitStack() as stack:
            scope["fastapi_middleware_astack"] = stack
            await super().handle(scope, receive, send)

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise invalid_parameter(exc) from None

        return handle


def invalid_parameter(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    problem = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    message = f"Invalid value for '{param}': {problem}." if param else f"Invalid request: {problem}."
    return APIError(400, message, param, "invalid_value")


class LlmsimAPI(FastAPI):
    """FastAPI's schema, with the raw routes' own descriptions added (once per route set)."""

    _described: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        if schema is not self._described:
            raw = [route for route in self.routes if isinstance(route, RawRoute)]
            models = [api.ErrorResponse]
            models += [model for route in self.routes for model in getattr(route, "schemas", ())]
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            for operations in schema["paths"].values():
                operations.pop("head", None)  # implied by GET
                for operation in operations.values():
                    # FastAPI's 422 never reaches a client: invalid input is a 400 in the envelope.
                    if operation["responses"].pop("422", None) is not None:
                        operation["responses"].setdefault("400", errors(400)["400"])
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            for route in raw:
                for method in sorted(route.methods - {"HEAD"}):
                    schema["paths"].setdefault(route.path_format, {})[method.lower()] = route.operation
            self._described = schema
        return schema


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    instance_id = resolve_instance_id(settings)
    stats = Stats()
    engine = Engine(settings, instance_id)
    journal = Journal(settings.journal_size) if settings.journal_size else None
    control = Control(engine, stats, settings.admin_token, journal)
    log.info("llmsim %s instance %s serving %s", __version__, instance_id, ", ".join(settings.models))

    async def root(request: Request) -> Response:
        return _json(
            {
                "name": "llmsim",
                "version": __version__,
                "instance": instance_id,
                "endpoints": sorted(set(paths.values())),
            }
        )

    async def health(request: Request) -> Response:
        scheduler = engine.scheduler
        return _json(
            {
                "status": "healthy",
                "instance": instance_id,
                "uptime_s": round(stats.uptime_s, 3),
                "running": scheduler.running,
                "waiting": scheduler.waiting,
            }
        )

    # One path, two providers: Anthropic's shape (and error envelope) when the request says
    # `anthropic-version`, as Anthropic's SDK always does; OpenAI's otherwise.
    async def list_models(request: Request) -> Response:
        if anthropic_messages.is_anthropic(request.scope):
            request.scope["llmsim.surface"] = anthropic_messages.WIRE
            return _json(anthropic_messages.model_list(engine.settings.models))
        return _json(models_surface.model_list(engine.settings.models))

    async def get_model(model_id: str, request: Request) -> Response:
        if anthropic_messages.is_anthropic(request.scope):
            request.scope["llmsim.surface"] = anthropic_messages.WIRE
            return _json(anthropic_messages.model(model_id, engine.settings.models))
        return _json(models_surface.model(model_id, engine.settings.models))

    # Handlers read what they need themselves and return a Response, which FastAPI passes on as
    # it is: the models only describe.
    openai, ops, control_api = ["OpenAI"], ["llmsim"], ["llmsim control"]
    routes: list[BaseRoute] = [
        *registry.routes(engine),
        ApiRoute("/v1/models", list_models, methods=["GET"], response_model=api.ModelList, tags=openai),
        ApiRoute(
            "/v1/models/{model_id:path}",
            get_model,
            methods=["GET"],
            response_model=api.ModelObject,
            responses={404: {**ERROR, "description": "No such model"}},
            tags=openai,
        ),
        ApiRoute("/", root, methods=["GET"], response_model=api.ServiceInfo, tags=ops),
        ApiRoute("/health", health, methods=["GET"], response_model=api.Health, tags=ops),
        ApiRoute(
            "/metrics",
            control.metrics,
            methods=["GET"],
            response_class=PlainTextResponse,
            summary="Prometheus metrics",
            tags=ops,
        ),
        ApiRoute(
            "/llmsim/stats",
            control.stats_endpoint,
            methods=["GET"],
            response_model=api.StatsSnapshot,
            responses=CONTROL_ERRORS,
            tags=control_api,
        ),
        ApiRoute(
            "/llmsim/config",
            control.get_config,
            methods=["GET"],
            response_model=api.Config,
            responses=CONTROL_ERRORS,
            tags=control_api,
        ),
        ApiRoute(
            "/llmsim/config",
            control.patch_config,
            methods=["PATCH"],
            response_model=api.Config,
            responses=CONTROL_ERRORS,
            openapi_extra={"requestBody": body(api.ConfigPatch)},
            schemas=[api.ConfigPatch],
            tags=control_api,
        ),
        ApiRoute(
            "/llmsim/reset",
            control.reset,
            methods=["POST"],
            response_model=api.ResetDone,
            responses=CONTROL_ERRORS,
            tags=control_api,
        ),
        ApiRoute(
            "/llmsim/requests",
            control.requests,
            methods=["GET"],
            response_model=api.JournalPage,
            responses=CONTROL_ERRORS,
            openapi_extra={"parameters": api.query_parameters(api.JournalQuery)},
            tags=control_api,
        ),
    ]
    app = LlmsimAPI(
        title="llmsim",
        version=__version__,
        summary="An OpenAI-compatible LLM simulator for testing AI gateways and load balancers.",
        routes=routes,
        redoc_url=None,
    )
    paths = {route.endpoint: route.path for route in app.routes if isinstance(route, Route)}
    # The Pipeline calls FastAPI's router directly (the surfaces' fixed paths by a dict lookup):
    # FastAPI's own middleware stack (its error, telemetry, body-limit and exit-stack layers)
    # would add work to every request, and the Pipeline already does what it is for.
    return Pipeline(
        FixedPaths(app.router),
        engine,
        stats,
        settings.max_body_bytes,
        paths,
        json_log=settings.log_format == "json",
        journal=journal,
    )
