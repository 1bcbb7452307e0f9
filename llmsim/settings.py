"""The one Settings object, and the safe reading of the files it names.

CLI flags, ``LLMSIM_*`` environment variables and an optional TOML/YAML config file all map onto
the fields below; precedence is CLI > environment > config file > default. The CLI is generated
from these fields, so a new setting is one new field.

Each field says here, once, what the control API may do with it (``json_schema_extra``):
``runtime`` fields may change with ``PATCH /llmsim/config``; ``file`` fields name a file, which
only the operator chooses, at startup (``reload``: a PATCH of its current value rereads it);
``secret`` fields are never shown. :data:`RUNTIME_SETTINGS`, :data:`FILE_SETTINGS`,
:data:`RELOADABLE_SETTINGS` and :data:`SECRET_SETTINGS` are derived from those marks, so a new
field is fixed and visible unless it says otherwise.

Files are read by :func:`read_file`: regular files only (a fifo or a device is refused, never
waited on), at most :data:`MAX_FILE_BYTES`; and no error about a file ever quotes its text, only
its path and a line and column or a position in its structure (:func:`describe_invalid`).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Collection
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import orjson
import yaml
from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from llmsim.latency import Shape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pydantic-settings[toml] installs tomli there
    import tomli as tomllib

DEFAULT_MODELS = (
    "gpt-3.5-turbo",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-5",
    "gpt-5-mini",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-3.5-turbo-instruct",
    "davinci-002",
    "babbage-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)
# Profiles, scripts, key files and configs are small: anything bigger is a mistake.
MAX_FILE_BYTES = 1024 * 1024
MAX_INLINE_BYTES = 64 * 1024  # script rules sent inline (PATCH, flag or env), as JSON

# The marks of the fields (see the module docstring).
RUNTIME: dict[str, Any] = {"runtime": True}
FILE: dict[str, Any] = {"file": True}
RELOADABLE_FILE: dict[str, Any] = {"file": True, "reload": True}
SECRET: dict[str, Any] = {"secret": True}


# --- reading the operator's files ------------------------------------------------------------------


class FileError(ValueError):
    """A file named in the settings cannot be used. The message names the file and at most a
    line and column or a position in its structure: never the file's text, which may be anything
    (a typo can point --profiles at a secrets file)."""


def read_file(path: str | os.PathLike[str], what: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes.

    Opened non-blocking and checked with fstat before any read, so a fifo is refused instead of
    blocking the server forever and a device (/dev/zero) instead of being read until memory runs out.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"{path}: the {what} must be a regular file")
        if info.st_size > limit:
            raise FileError(f"{path}: the {what} is larger than {limit // 1024} KiB")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow between fstat and read: never read past the limit
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileError(f"{path}: the {what} is larger than {limit // 1024} KiB")
    except OSError as exc:
        raise FileError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise FileError(f"{path}: the {what} is not UTF-8 text") from None


_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~4x faster


def parse_yaml(text: str, source: str | os.PathLike[str]) -> Any:
    """YAML (or JSON) data; a syntax error names ``source`` and the line and column only."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        # PyYAML's problem text can quote the offending token: keep only the position.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise FileError(f"{source}: not valid YAML{where}") from None


_TOML_POSITION = re.compile(r"\(at (line \d+, column \d+|end of document)\)")


def parse_toml(text: str, source: str | os.PathLike[str]) -> dict[str, Any]:
    """TOML data; a syntax error names ``source`` and the line and column only."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.search(str(exc))
        raise FileError(f"{source}: not valid TOML{f' at {found[1]}' if found else ''}") from None


def schema_names(*models: type[BaseModel]) -> frozenset[str]:
    """The field names of these models: the only names :func:`describe_invalid` may print."""
    return frozenset(name for model in models for name in model.model_fields)


def describe_invalid(exc: ValidationError, data: Any, names: Collection[str]) -> str:
    """The first problem as ``rules[2].error.status: message``, without the data's own text.

    A location part that is not one of the schema's ``names`` is a key written in the file (a
    profile's name, an unknown field): it shows as its position, ``[key 3]``. Pydantic's messages
    describe what was expected, not what was found, so they stay.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    message = first["msg"].removeprefix("Value error, ")
    where, node = "", data
    for index, part in enumerate(first["loc"]):
        if isinstance(part, int):
            where += f"[{part}]"
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            continue
        if part in names:
            where += f".{part}" if where else str(part)
        elif isinstance(node, dict) and part in node:
            position = list(node).index(part) + 1
            if first["type"] == "extra_forbidden" and index == len(first["loc"]) - 1:
                message = f"its key {position} is not a known field"
            else:
                where += f"[key {position}]"
        else:
            where += "[?]"
        node = node.get(part) if isinstance(node, dict) else None
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' * (extra > 1)})" if extra else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def config_file(path: str) -> dict[str, Any]:
    """The --config file's settings, read as the other files are (a clean error, no content)."""
    try:
        text = read_file(path, "config file")
        data = parse_yaml(text, path) if Path(path).suffix in {".yaml", ".yml"} else parse_toml(text, path)
        if data is not None and not isinstance(data, dict):
            raise FileError(f"{path}: the config file should be a mapping of settings")
    except FileError as exc:
        # A ValidationError is what the CLI prints as one line, as for any other bad setting.
        raise ValidationError.from_exception_data(
            "Settings",
            [{"type": PydanticCustomError("config_file", str(exc)), "loc": ("config",), "input": None}],
        ) from None
    return data or {}


# --- the settings ----------------------------------------------------------------------------------


class ResponseMode(str, Enum):
    echo = "echo"
    fixed = "fixed"
    lorem = "lorem"
    script = "script"


class ControlAccess(str, Enum):
    """Who may use the control API (/llmsim/config, /llmsim/reset, /llmsim/stats)."""

    loopback = "loopback"  # the admin token when one is set, else loopback clients only
    token = "token"  # always the admin token, from loopback too; refuse to start without one
    off = "off"  # nobody: the control paths answer 403


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMSIM_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    host: str = Field("127.0.0.1", description="Interface to bind; containers use 0.0.0.0.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    reload: bool = Field(False, description="Restart the server when the code changes (development).")
    instance_id: str | None = Field(
        None,
        # POD_NAME is what the Kubernetes downward API sets; LLMSIM_INSTANCE_ID wins over it.
        validation_alias=AliasChoices("instance_id", "LLMSIM_INSTANCE_ID", "POD_NAME"),
        description="ID stamped into every response (default: $POD_NAME, else <hostname>:<port>).",
    )
    hostname: str | None = Field(
        None,
        # Docker sets HOSTNAME to the container's (unique per replica) hostname.
        validation_alias=AliasChoices("hostname", "LLMSIM_HOSTNAME", "HOSTNAME"),
        description="Host name used in the default instance ID (default: $HOSTNAME, else the system's).",
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_MODELS, description="Comma-separated model IDs to serve."
    )
    azure_deployments: str | None = Field(
        None,
        description="Azure OpenAI deployments as name=model pairs, e.g. "
        "prod-4o=gpt-4o,emb=text-embedding-3-small (default: every served model is a deployment of its own "
        "name).",
        json_schema_extra=RUNTIME,
    )
    response_mode: ResponseMode = Field(
        ResponseMode.echo,
        description="echo: quote the last user message; fixed: --fixed-text; "
        "lorem: deterministic filler of --output-tokens tokens; script: rules from --script-rules "
        "or --script (unmatched requests fall back to echo).",
        json_schema_extra=RUNTIME,
    )
    fixed_text: str = Field(
        "This is a simulated response from llmsim.",
        description="The text answered in fixed mode.",
        json_schema_extra=RUNTIME,
    )
    script: str | None = Field(
        None,
        description="YAML rules file for --response-mode script (reloaded on change).",
        json_schema_extra=RELOADABLE_FILE,
    )
    script_rules: Annotated[dict[str, Any] | None, NoDecode] = Field(
        None,
        description="Script rules inline, as YAML or JSON (at most 64 KiB); they win over --script.",
        json_schema_extra=RUNTIME,
    )
    tool_call_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Chance of a tool call when tools are given with tool_choice auto.",
        json_schema_extra=RUNTIME,
    )
    output_tokens: int = Field(
        64, ge=1, description="Length of lorem output, in tokens (the mean).", json_schema_extra=RUNTIME
    )
    output_tokens_stddev: float = Field(
        0.0, ge=0, description="Spread of the lorem output length.", json_schema_extra=RUNTIME
    )
    output_tokens_distribution: Shape = Field(
        Shape.normal, description="constant, normal or lognormal.", json_schema_extra=RUNTIME
    )
    # Latency (milliseconds). All zero by default: an instant server until asked otherwise.
    prefill_overhead: float = Field(
        0.0, ge=0, description="Fixed part of the time to first token, ms.", json_schema_extra=RUNTIME
    )
    prefill_overhead_stddev: float = Field(
        0.0, ge=0, description="Its standard deviation, ms.", json_schema_extra=RUNTIME
    )
    prefill_distribution: Shape = Field(
        Shape.normal, description="constant, normal or lognormal.", json_schema_extra=RUNTIME
    )
    prefill_ms_per_token: float = Field(
        0.0, ge=0, description="Time to first token per prompt token, ms.", json_schema_extra=RUNTIME
    )
    itl: float = Field(
        0.0, ge=0, description="Inter-token latency between content chunks, ms.", json_schema_extra=RUNTIME
    )
    itl_stddev: float = Field(0.0, ge=0, description="Its standard deviation, ms.", json_schema_extra=RUNTIME)
    itl_distribution: Shape = Field(
        Shape.normal, description="constant, normal or lognormal.", json_schema_extra=RUNTIME
    )
    latency_seed: int | None = Field(
        None, description="Seed for latency sampling (reproducible runs).", json_schema_extra=RUNTIME
    )
    profile: str | None = Field(
        None,
        description="Named latency profile for every model (shipped, or from --profiles).",
        json_schema_extra=RUNTIME,
    )
    profiles: str | None = Field(
        None,
        description="YAML/TOML file of named profiles and a model -> profile map (added to the shipped ones).",
        json_schema_extra=RELOADABLE_FILE,
    )
    # Faults
    failure_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of requests that fail (random, seeded).",
        json_schema_extra=RUNTIME,
    )
    failure_types: str | None = Field(
        None,
        description="Comma list of fault types for --failure-rate/--fail-first (default server_error): "
        "rate_limit, server_error, overloaded, bad_gateway, timeout, context_length, auth, "
        "disconnect, malformed, slow.",
        json_schema_extra=RUNTIME,
    )
    fail_first: int = Field(
        0,
        ge=0,
        description="The first N requests fail, then all succeed (retry tests).",
        json_schema_extra=RUNTIME,
    )
    fault_seed: int | None = Field(
        None, description="Seed for random fault selection.", json_schema_extra=RUNTIME
    )
    fault_after: int = Field(
        3, ge=0, description="Chunks streamed before a disconnect/malformed fault.", json_schema_extra=RUNTIME
    )
    timeout_hang: float = Field(
        600.0,
        ge=0,
        description="Seconds a timeout fault holds a request, then 504.",
        json_schema_extra=RUNTIME,
    )
    slow_factor: float = Field(
        10.0, ge=1, description="TTFT multiplier of the slow fault.", json_schema_extra=RUNTIME
    )
    retry_after: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Seconds in Retry-After/retry-after-ms of 429/503 faults and a full queue; 0 sends none.",
        json_schema_extra=RUNTIME,
    )
    # Access
    api_keys: str | None = Field(
        None,
        description="Comma list of accepted API keys (default: no auth); prefer the env or --api-keys-file, "
        "which stay out of ps.",
        json_schema_extra={**RUNTIME, **SECRET},
    )
    api_keys_file: str | None = Field(
        None,
        description="File of API keys: 'key [org [project [tier]]]' a line.",
        json_schema_extra=RELOADABLE_FILE,
    )
    rpm: int | None = Field(
        None, ge=1, description="Requests per minute per key (or per client).", json_schema_extra=RUNTIME
    )
    tpm: int | None = Field(
        None, ge=1, description="Tokens per minute per key (prompt + max_tokens).", json_schema_extra=RUNTIME
    )
    tier_limits: str | None = Field(
        None,
        description="Limits per key tier, e.g. free=3:40000,tier1=500:200000 (RPM:TPM).",
        json_schema_extra=RUNTIME,
    )
    admin_token: str | None = Field(
        None,
        description="Bearer token for the control API (/llmsim/config, /reset, /stats); prefer the env "
        "or --admin-token-file, which stay out of ps.",
        json_schema_extra=SECRET,
    )
    admin_token_file: str | None = Field(
        None, description="File holding the admin token (one line).", json_schema_extra=FILE
    )
    control_access: ControlAccess = Field(
        ControlAccess.loopback,
        description="loopback: the admin token when set, else loopback clients only; token: always the "
        "admin token (a same-host proxy is not trusted); off: no control API.",
    )
    log_format: str = Field("text", description="text, or json for one structured access-log line a request.")
    # Load
    max_concurrency: int = Field(0, ge=0, description="Sequences generating at once; 0 = unlimited.")
    max_queue: int | None = Field(
        None,
        ge=0,
        description="Requests waiting for a slot; past it they are rejected.",
        json_schema_extra=RUNTIME,
    )
    queue_full_status: int = Field(
        429, description="Status when the queue is full: 429 or 503.", json_schema_extra=RUNTIME
    )
    slowdown: float = Field(
        0.0,
        ge=0,
        description="ITL grows by this factor x running/max-concurrency (0 = no slowdown).",
        json_schema_extra=RUNTIME,
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    shutdown_timeout: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Seconds in-flight requests get to finish after SIGTERM; then they are cut.",
    )
    read_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a client may take to send a whole request, from its first byte "
        "(or from connecting); slower connections are closed.",
    )
    journal_size: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Requests kept in the journal (GET /llmsim/requests); 0 keeps none.",
    )
    access_log: bool = Field(False, description="Log one line per request (costs throughput).")
    log_level: str = Field("info", description="critical, error, warning, info, debug or trace.")

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [m.strip() for m in value.split(",")]
        if isinstance(value, (list, tuple)):
            value = tuple(m for m in value if m)
            if not value:
                raise ValueError("at least one model is required")
        return value

    @field_validator("script_rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: Any) -> Any:
        """A flag or an environment variable gives the rules as text: YAML (JSON is YAML)."""
        if isinstance(value, str):
            if len(value.encode()) > MAX_INLINE_BYTES:
                raise ValueError(f"larger than {MAX_INLINE_BYTES // 1024} KiB; name a file with --script")
            value = parse_yaml(value, "the rules")
        return value

    @field_validator("script_rules")
    @classmethod
    def _check_rules(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            size = len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
        except TypeError:
            raise ValueError("the rules must be plain JSON data") from None
        if size > MAX_INLINE_BYTES:
            raise ValueError(f"larger than {MAX_INLINE_BYTES // 1024} KiB; name a file with --script")
        from llmsim.script import parse_rules

        parse_rules(value)  # the rules' own errors, at once (e.g. a 400 to the PATCH)
        return value

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        if self.response_mode is ResponseMode.script and not self.script and self.script_rules is None:
            raise ValueError("--response-mode script needs --script FILE or --script-rules")
        if self.admin_token and self.admin_token_file:
            raise ValueError("give --admin-token or --admin-token-file, not both")
        if self.control_access is ControlAccess.token and not (self.admin_token or self.admin_token_file):
            raise ValueError(
                "--control-access token needs --admin-token, $LLMSIM_ADMIN_TOKEN or --admin-token-file"
            )
        return self

    @model_validator(mode="after")
    def _check_deployments(self) -> Settings:
        if not self.azure_deployments:
            return self
        from llmsim.surfaces.azure_openai import parse_deployments

        for name, model in parse_deployments(self.azure_deployments).items():
            if model not in self.models:
                raise ValueError(f"azure_deployments: {name!r} names {model!r}, which is not one of --models")
        return self

    @field_validator("queue_full_status")
    @classmethod
    def _check_full_status(cls, value: int) -> int:
        if value not in (429, 503):
            raise ValueError("must be 429 or 503")
        return value

    @field_validator("tier_limits")
    @classmethod
    def _check_tiers(cls, value: str | None) -> str | None:
        from llmsim.limits import parse_tier_limits

        parse_tier_limits(value)
        return value

    @field_validator("failure_types")
    @classmethod
    def _check_fault_types(cls, value: str | None) -> str | None:
        from llmsim.faults import FaultType

        for name in (value or "").split(","):
            if name.strip() and name.strip() not in FaultType.__members__:
                raise ValueError(
                    f"unknown fault type {name.strip()!r} (known: {', '.join(FaultType.__members__)})"
                )
        return value

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("must be text or json")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug", "trace"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("LLMSIM_CONFIG")
        if config:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=config_file(config)))
        return tuple(sources)


def _marked(mark: str) -> frozenset[str]:
    return frozenset(
        name
        for name, field in Settings.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(mark)
    )


RUNTIME_SETTINGS = _marked("runtime")  # PATCH /llmsim/config may change them
FILE_SETTINGS = _marked("file") | {"config"}  # name a file: chosen at startup only (--config is no field)
RELOADABLE_SETTINGS = _marked("reload")  # files a PATCH of their current value rereads
SECRET_SETTINGS = _marked("secret")  # shown as "***"
