"""Runtime control of one instance: /llmsim/config, /llmsim/reset, /llmsim/stats, /metrics.

Who may call: ``Authorization: Bearer <admin token>`` when one is configured (``--admin-token``,
``$LLMSIM_ADMIN_TOKEN`` or ``--admin-token-file``); without one, loopback clients only, so an
instance on 0.0.0.0 cannot be reconfigured from the network by accident. ``--control-access
token`` always asks for the token (a proxy on the same host looks like loopback), ``off`` closes
the control paths.

What a PATCH may do: change the settings marked ``runtime`` in llmsim.settings, for new requests
at once, all or nothing (a rejected PATCH changes nothing). It never makes the server read a file
the client names: files are the operator's, named at startup. A file setting may only be PATCHed
with its current value, which reloads that file; content comes inline instead (``script_rules``,
``api_keys``, ``profile`` by name among the loaded profiles). No answer quotes a file or a secret.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from functools import partial
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from llmsim.engine import Engine
from llmsim.errors import APIError
from llmsim.journal import DEFAULT_LIMIT, MAX_LIMIT, Journal, valid_trace
from llmsim.settings import (
    FILE_SETTINGS,
    RELOADABLE_SETTINGS,
    RUNTIME_SETTINGS,
    SECRET_SETTINGS,
    ControlAccess,
    FileError,
    Settings,
    read_file,
)
from llmsim.stats import Stats
from llmsim.workers import in_thread

# What a client can do instead of naming a file.
_INSTEAD = {
    "script": "send rules inline in 'script_rules'",
    "profiles": "pick a loaded profile by name in 'profile'",
    "api_keys_file": "send keys inline in 'api_keys'",
}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def _number(query: Any, name: str, kind: type, low: float, high: float) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # NaN fails too
        raise APIError(
            400, f"Invalid '{name}': expected a number from {low:g} to {high:g}.", name, "invalid_value"
        )
    return value


def read_admin_token(path: str) -> str:
    """The token in ``--admin-token-file``: one line, surrounding whitespace ignored."""
    token = read_file(path, "admin token file", limit=4096).strip()
    if not token or "\n" in token:
        raise FileError(f"{path}: the admin token file must hold the token on one line")
    return token


class Control:
    def __init__(
        self, engine: Engine, stats: Stats, admin_token: str | None, journal: Journal | None = None
    ) -> None:
        self.engine = engine
        self.stats = stats
        self.journal = journal
        settings = engine.settings
        self.access = settings.control_access
        if admin_token is None and settings.admin_token_file:
            admin_token = read_admin_token(settings.admin_token_file)
        # Compared as bytes: the token's UTF-8 against the header's raw bytes.
        self.token = admin_token.encode("utf-8", "surrogateescape") if admin_token else None
        self._patching = asyncio.Lock()  # one PATCH at a time: each builds on what the last left

    def _guard(self, request: Request) -> None:
        if self.access is ControlAccess.off:
            raise APIError(
                403,
                "The llmsim control API is turned off on this instance (--control-access off).",
                code="forbidden",
                type="permission_error",
            )
        if self.token is None:  # --control-access token cannot start without one
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
        # The raw header bytes: Starlette's str headers are latin-1, which would garble a UTF-8 token.
        given = next((v for k, v in request.scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.token):
            raise APIError(
                401,
                "A valid admin token is required (Authorization: Bearer <admin token>).",
                code="invalid_admin_token",
            )

    def config(self) -> dict[str, Any]:
        data = self.engine.settings.model_dump(mode="json")
        for name in SECRET_SETTINGS:
            if data.get(name):
                data[name] = "***"
        if self.token is not None:  # also when it came from --admin-token-file
            data["admin_token"] = "***"
        return data

    async def get_config(self, request: Request) -> Response:
        self._guard(request)
        return _json(self.config())

    def _check(self, patch: dict[str, Any], current: Settings) -> frozenset[str]:
        """Refuse what may not change at runtime; the file settings to reload."""
        reload = set()
        for name, value in patch.items():
            if name in FILE_SETTINGS:
                reloadable = name in RELOADABLE_SETTINGS
                if reloadable and value == getattr(current, name):
                    if value is not None:
                        reload.add(name)
                    continue
                instead = f", or {_INSTEAD[name]}" if name in _INSTEAD else ""
                again = " PATCH it with its current value to reload that file" if reloadable else ""
                raise APIError(
                    400,
                    f"'{name}' names a file, and only the operator chooses files, at startup.{again}{instead}.",
                    name,
                    "invalid_value",
                )
            if name not in Settings.model_fields:
                raise APIError(400, f"Unknown setting '{name}'.", name, "unknown_parameter")
            if name not in RUNTIME_SETTINGS:
                raise APIError(400, f"'{name}' cannot be changed at runtime.", name, "invalid_value")
        return frozenset(reload)

    async def patch_config(self, request: Request) -> Response:
        self._guard(request)
        try:
            patch = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise APIError(400, "The body must be a JSON object of settings to change.") from None
        if not isinstance(patch, dict):
            raise APIError(400, "The body must be a JSON object of settings to change.", code="invalid_type")
        async with self._patching:
            current = self.engine.settings
            reload = self._check(patch, current)
            try:
                updated = Settings.model_validate({**current.model_dump(), **patch})
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                param = ".".join(str(p) for p in first["loc"]) or None
                problem = first["msg"].removeprefix("Value error, ")
                message = (
                    f"Invalid value for '{param}': {problem}." if param else f"Invalid settings: {problem}."
                )
                raise APIError(400, message, param, "invalid_value") from None
            try:
                if reload:  # reading and parsing a file (up to 1 MiB) must not stall the event loop
                    swap = await in_thread(partial(self.engine.configure, updated, reload, commit=False))
                else:
                    swap = self.engine.configure(updated, commit=False)
            except ValidationError:  # not expected (Settings checked the values); never echo its input
                raise APIError(400, "The settings could not be applied.", code="invalid_value") from None
            except ValueError as exc:  # FileError and co: they name a file and a position, no content
                raise APIError(400, str(exc), code="invalid_value") from None
            swap()  # everything was built: the change is all or nothing
            if "fail_first" in patch:  # setting it, even to the same N, starts the count again
                self.engine.faults.configure(fail_first=updated.fail_first)
        return _json(self.config())

    async def reset(self, request: Request) -> Response:
        self._guard(request)
        self.stats.reset()
        self.engine.limits.reset()
        for memory in self.engine.memories:  # prompt caches, stored responses
            memory.clear()
        if self.journal is not None:
            self.journal.clear()
        return _json({"reset": True})

    async def requests(self, request: Request) -> Response:
        """The journal: ``trace`` (a token prefix), ``since`` (arrival, Unix seconds), ``limit``."""
        self._guard(request)
        query = request.query_params
        trace = query.get("trace") or None
        if trace is not None and valid_trace(trace.encode("utf-8", "replace")) != trace.encode():
            raise APIError(400, "Invalid 'trace': 1 to 64 of A-Z a-z 0-9 . _ -", "trace", "invalid_value")
        since = _number(query, "since", float, 0.0, float("inf"))
        limit = _number(query, "limit", int, 0, MAX_LIMIT)
        journal = self.journal
        if journal is None:
            body: dict[str, Any] = {"size": 0, "total": 0, "entries": []}
        else:
            body = journal.query(trace, since, DEFAULT_LIMIT if limit is None else int(limit))
        return _json({"instance": self.engine.instance_id, **body})

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
                    "faults": {**engine.faults.snapshot(), "faults": dict(self.stats.faults)},
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
