"""Typed descriptions of what llmsim's own endpoints take and answer, for ``/openapi.json``.

The handlers read requests and write responses themselves (``llmsim/control.py``, ``llmsim/app.py``):
these models are what FastAPI describes, never a layer a request passes through. The settings
models are derived from :class:`llmsim.settings.Settings`, so a new setting is described with no
edit here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from llmsim.journal import DEFAULT_LIMIT, MAX_LIMIT
from llmsim.settings import RELOADABLE_SETTINGS, RUNTIME_SETTINGS, SECRET_SETTINGS, Settings


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error llmsim answers, in OpenAI's envelope."""

    error: ErrorDetail


class ServiceInfo(BaseModel):
    name: Literal["llmsim"]
    version: str
    instance: str
    endpoints: list[str] = Field(description="The paths this instance serves.")


class Health(BaseModel):
    status: Literal["healthy"]
    instance: str
    uptime_s: float
    running: int = Field(description="Sequences generating now.")
    waiting: int = Field(description="Requests queued for a slot.")


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


def _optional(name: str) -> tuple[Any, Any]:
    field = Settings.model_fields[name]
    return field.annotation | None, Field(None, description=field.description)


# Only what a PATCH may name: runtime settings, and reloadable files (with their current value).
ConfigPatch = create_model(
    "ConfigPatch",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Settings to change at once, all or nothing; only the names listed here are accepted. "
    "A file setting only with its current value, which rereads that file.",
    **{name: _optional(name) for name in sorted(RUNTIME_SETTINGS | RELOADABLE_SETTINGS)},
)


def _shown(name: str) -> tuple[Any, Any]:
    field = Settings.model_fields[name]
    annotation = field.annotation if name not in SECRET_SETTINGS else Literal["***"] | None
    return annotation, Field(description=field.description)


Config = create_model(
    "Config",
    __doc__='The instance\'s settings in effect; secrets (and the admin token) shown as "***".',
    **{name: _shown(name) for name in Settings.model_fields if name != "admin_token"},
    admin_token=(Literal["***"] | None, Field(description=Settings.model_fields["admin_token"].description)),
)


class ResetDone(BaseModel):
    reset: Literal[True]


class ActiveFaults(BaseModel):
    failure_rate: float
    failure_types: list[str]
    fail_first_remaining: int
    faults: dict[str, int] = Field(description="Faults injected since the last reset, by type.")


class ActiveLatency(BaseModel):
    profile: str | None
    prefill_overhead_ms: float
    itl_ms: float


class Active(BaseModel):
    faults: ActiveFaults
    latency: ActiveLatency
    response_mode: str


class StatsSnapshot(BaseModel):
    instance: str
    started_at: float = Field(description="Unix seconds.")
    uptime_s: float
    in_flight: int
    requests_total: int
    requests: dict[str, dict[str, int]] = Field(description="Route path -> status -> count.")
    faults: dict[str, int]
    running: int
    waiting: int
    active: Active


class JournalQuery(BaseModel):
    """The query parameters of ``GET /llmsim/requests``."""

    trace: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Entries whose trace token (x-llmsim-trace, or one in the body) starts with this.",
    )
    since: float | None = Field(None, ge=0, description="Entries that arrived at or after (Unix seconds).")
    limit: int = Field(DEFAULT_LIMIT, ge=0, le=MAX_LIMIT, description="The newest this many entries.")


class Plan(BaseModel):
    ttft_ms: float
    itl_ms: float


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None


class JournalEntry(BaseModel):
    seq: int
    at: float
    request_id: str
    trace: str | None
    method: str
    path: str
    model: str | None
    stream: bool | None
    headers: dict[str, str] = Field(description="As received; credentials masked.")
    status: int | None
    fault: str | None
    plan: Plan | None
    events: int | None
    usage: Usage | None
    ended: str
    duration_ms: float | None


class JournalPage(BaseModel):
    instance: str
    size: int = Field(description="Entries the ring keeps (--journal-size).")
    total: int = Field(description="Requests journaled since start or reset.")
    entries: list[JournalEntry]


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` (in the query) from a model's fields."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": prop.pop("description", ""),
            "schema": prop,
        }
        for name, prop in schema["properties"].items()
    ]
