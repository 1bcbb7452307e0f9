"""Builds the ASGI app from Settings: the routes, inside the shared Pipeline."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp

from llmsim import __version__
from llmsim.control import Control
from llmsim.engine import Engine
from llmsim.identity import resolve_instance_id
from llmsim.journal import Journal
from llmsim.pipeline import Pipeline
from llmsim.settings import Settings
from llmsim.stats import Stats
from llmsim.surfaces import models as models_surface
from llmsim.surfaces.openai_chat import ChatCompletions

log = logging.getLogger("llmsim")


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


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

    async def list_models(request: Request) -> Response:
        return _json(models_surface.model_list(engine.settings.models))

    async def get_model(request: Request) -> Response:
        return _json(models_surface.model(request.path_params["model_id"], engine.settings.models))

    # Handlers take a Request and read what they need themselves: no framework layer is spent
    # per request on what a route does not use. The hot route comes first.
    routes = [
        Route("/v1/chat/completions", ChatCompletions(engine), methods=["POST"]),
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/metrics", control.metrics, methods=["GET"]),
        Route("/llmsim/stats", control.stats_endpoint, methods=["GET"]),
        Route("/llmsim/config", control.get_config, methods=["GET"]),
        Route("/llmsim/config", control.patch_config, methods=["PATCH"]),
        Route("/llmsim/reset", control.reset, methods=["POST"]),
        Route("/llmsim/requests", control.requests, methods=["GET"]),
    ]
    paths = {route.endpoint: route.path for route in routes}
    return Pipeline(
        Router(routes),
        engine,
        stats,
        settings.max_body_bytes,
        paths,
        json_log=settings.log_format == "json",
        journal=journal,
    )
