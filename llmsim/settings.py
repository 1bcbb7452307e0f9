"""The one Settings object.

CLI flags, ``LLMSIM_*`` environment variables and an optional TOML/YAML config file all map onto
the fields below; precedence is CLI > environment > config file > default. The CLI is generated
from these fields, so a new setting is one new field.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from llmsim.latency import Shape

DEFAULT_MODELS = ("gpt-3.5-turbo", "gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-4o-mini")


class ResponseMode(str, Enum):
    echo = "echo"
    fixed = "fixed"
    lorem = "lorem"
    script = "script"


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
    response_mode: ResponseMode = Field(
        ResponseMode.echo,
        description="echo: quote the last user message; fixed: --fixed-text; "
        "lorem: deterministic filler of --output-tokens tokens; script: rules from --script "
        "(unmatched requests fall back to echo).",
    )
    fixed_text: str = Field(
        "This is a simulated response from llmsim.", description="The text answered in fixed mode."
    )
    script: str | None = Field(
        None, description="YAML rules for --response-mode script (reloaded on change)."
    )
    tool_call_probability: float = Field(
        0.0, ge=0, le=1, description="Chance of a tool call when tools are given with tool_choice auto."
    )
    output_tokens: int = Field(64, ge=1, description="Length of lorem output, in tokens (the mean).")
    output_tokens_stddev: float = Field(0.0, ge=0, description="Spread of the lorem output length.")
    output_tokens_distribution: Shape = Field(Shape.normal, description="constant, normal or lognormal.")
    # Latency (milliseconds). All zero by default: an instant server until asked otherwise.
    prefill_overhead: float = Field(0.0, ge=0, description="Fixed part of the time to first token, ms.")
    prefill_overhead_stddev: float = Field(0.0, ge=0, description="Its standard deviation, ms.")
    prefill_distribution: Shape = Field(Shape.normal, description="constant, normal or lognormal.")
    prefill_ms_per_token: float = Field(0.0, ge=0, description="Time to first token per prompt token, ms.")
    itl: float = Field(0.0, ge=0, description="Inter-token latency between content chunks, ms.")
    itl_stddev: float = Field(0.0, ge=0, description="Its standard deviation, ms.")
    itl_distribution: Shape = Field(Shape.normal, description="constant, normal or lognormal.")
    latency_seed: int | None = Field(None, description="Seed for latency sampling (reproducible runs).")
    profile: str | None = Field(None, description="Named latency profile for every model (see --profiles).")
    profiles: str | None = Field(
        None,
        description="YAML/TOML file of named profiles and a model -> profile map (added to the shipped ones).",
    )
    # Faults
    failure_rate: float = Field(
        0.0, ge=0, le=1, description="Fraction of requests that fail (random, seeded)."
    )
    failure_types: str | None = Field(
        None,
        description="Comma list of fault types for --failure-rate/--fail-first (default server_error): "
        "rate_limit, server_error, overloaded, bad_gateway, timeout, context_length, auth, "
        "disconnect, malformed, slow.",
    )
    fail_first: int = Field(0, ge=0, description="The first N requests fail, then all succeed (retry tests).")
    fault_seed: int | None = Field(None, description="Seed for random fault selection.")
    fault_after: int = Field(3, ge=0, description="Chunks streamed before a disconnect/malformed fault.")
    timeout_hang: float = Field(600.0, ge=0, description="Seconds a timeout fault holds a request, then 504.")
    slow_factor: float = Field(10.0, ge=1, description="TTFT multiplier of the slow fault.")
    # Access
    api_keys: str | None = Field(None, description="Comma list of accepted API keys (default: no auth).")
    api_keys_file: str | None = Field(
        None, description="File of API keys: 'key [org [project [tier]]]' a line."
    )
    rpm: int | None = Field(None, ge=1, description="Requests per minute per key (or per client).")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute per key (prompt + max_tokens).")
    tier_limits: str | None = Field(
        None, description="Limits per key tier, e.g. free=3:40000,tier1=500:200000 (RPM:TPM)."
    )
    admin_token: str | None = Field(
        None, description="Bearer token for /llmsim/config and /llmsim/reset (default: loopback only)."
    )
    log_format: str = Field("text", description="text, or json for one structured access-log line a request.")
    # Load
    max_concurrency: int = Field(0, ge=0, description="Sequences generating at once; 0 = unlimited.")
    max_queue: int | None = Field(
        None, ge=0, description="Requests waiting for a slot; past it they are rejected."
    )
    queue_full_status: int = Field(429, description="Status when the queue is full: 429 or 503.")
    slowdown: float = Field(
        0.0, ge=0, description="ITL grows by this factor x running/max-concurrency (0 = no slowdown)."
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
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

    @model_validator(mode="after")
    def _script_needs_file(self) -> Settings:
        if self.response_mode is ResponseMode.script and not self.script:
            raise ValueError("--response-mode script needs --script FILE")
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
            path = Path(config)
            if path.suffix in {".yaml", ".yml"}:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
