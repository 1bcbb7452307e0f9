"""Runtime control of one instance: /llmsim/config, /llmsim/reset, /llmsim/stats, /metrics.

The control paths take ``Authorization: Bearer <--admin-token>``; without a configured token
they answer only to loopback clients, so an instance on 0.0.0.0 cannot be reconfigured from
the network by accident. Changes apply to new requests at once.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from llmsim.engine import Engine
from llmsim.errors import APIError
from llmsim.settings import Settings
from llmsim.stats import Stats

# Fixed for the life of the process: they shape the socket, the identity or the accounting.
FIXED = frozenset(
    {
        "host",
        "port",
        "reload",
        "instance_id",
        "hostname",
        "models",
        "max_concurrency",
        "max_body_bytes",
        "access_log",
        "log_level",
        "log_format",
        "admin_token",
    }
)
SECRET = frozenset({"admin_token", "api_keys"})


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


class Control:
    def __init__(self, engine: Engine, stats: Stats, admin_token: str | None) -> None:
        self.engine = engine
        self.stats = stats
        self.token = admin_token.encode() if admin_token else None

    def _guard(self, request: Request) -> None:
        if self.token is None:
            host = request.client.host if request.client else ""
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise APIError(
                    403,
                    "The llmsim control API answers only on loopback unless --admin-token is set.",
                    code="forbidden",
                    type="permission_error",
                )
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token):
            raise APIError(
                401,
                "A valid admin token is required (Authorization: Bearer <admin token>).",
                code="invalid_admin_token",
            )

    def config(self) -> dict[str, Any]:
        data = self.engine.settings.model_dump(mode="json")
        for name in SECRET:
            if data.get(name):
                data[name] = "***"
        return data

    async def get_config(self, request: Request) -> Response:
        self._guard(request)
        return _json(self.config())

    async def patch_config(self, request: Request) -> Response:
        self._guard(request)
        try:
            patch = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise APIError(400, "The body must be a JSON object of settings to change.") from None
        if not isinstance(patch, dict):
            raise APIError(400, "The body must be a JSON object of settings to change.", code="invalid_type")
        for name in patch:
            if name not in Settings.model_fields:
                raise APIError(400, f"Unknown setting '{name}'.", name, "unknown_parameter")
            if name in FIXED:
                raise APIError(400, f"'{name}' cannot be changed at runtime.", name, "invalid_value")
        current = self.engine.settings.model_dump()
        try:
            updated = Settings.model_validate({**current, **patch})
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise APIError(
                400, f"Invalid value for '{param}': {first['msg']}.", param, "invalid_value"
            ) from None
        try:
            self.engine.configure(updated)
        except (ValueError, OSError) as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        if "fail_first" in patch:  # setting it, even to the same N, starts the count again
            self.engine.faults.configure(fail_first=updated.fail_first)
        return _json(self.config())

    async def reset(self, request: Request) -> Response:
        self._guard(request)
        self.stats.reset()
        self.engine.limits.reset()
        self.engine.faults.counts.clear()
        return _json({"reset": True})

    async def stats_endpoint(self, request: Request) -> Response:
        self._guard(request)
        engine, settings = self.engine, self.engine.settings
        return _json(
            {
                "instance": engine.instance_id,
                **self.stats.snapshot(),
                "running": engine.scheduler.running,
                "waiting": engine.scheduler.waiting,
                "active": {
                    "faults": engine.faults.snapshot(),
                    "latency": {
                        "profile": settings.profile,
                        "prefill_overhead_ms": settings.prefill_overhead,
                        "itl_ms": settings.itl,
                    },
                    "response_mode": settings.response_mode.value,
                },
            }
        )

    async def metrics(self, request: Request) -> Response:
        body, content_type = self.engine.metrics.render()
        return Response(body, media_type=content_type)
