"""When each token leaves: the latency model every API surface shares.

Time to first token = queue wait + prefill, prefill = overhead + ms-per-token × prompt tokens;
then one inter-token latency (ITL) between content chunks. Each quantity is a distribution
(constant, normal or lognormal), sampled per request and clamped at zero. Named profiles (in a
YAML or TOML file) give models their own speeds.

Deadlines are absolute (start + TTFT + the ITLs so far, on the monotonic clock), so a late
wake-up is made up at the next token instead of pushing every later token back: many concurrent
streams do not make the simulated clock drift.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive

from llmsim.errors import APIError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pydantic-settings[toml] installs tomli there
    import tomli as tomllib

if TYPE_CHECKING:
    from llmsim.settings import Settings


class Shape(str, Enum):
    constant = "constant"
    normal = "normal"
    lognormal = "lognormal"


@dataclass(frozen=True, slots=True)
class Dist:
    mean: float
    stddev: float = 0.0
    shape: Shape = Shape.normal

    def sample(self, rng: random.Random) -> float:
        if self.stddev <= 0 or self.shape is Shape.constant or self.mean <= 0:
            return max(0.0, self.mean)
        if self.shape is Shape.lognormal:
            # Parameters of the underlying normal that give this mean and standard deviation.
            sigma2 = math.log1p((self.stddev / self.mean) ** 2)
            return rng.lognormvariate(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))
        return max(0.0, rng.gauss(self.mean, self.stddev))


class Profile(BaseModel):
    """A model's speed. Times in milliseconds; the same names as the serve flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    source: str = ""
    prefill_overhead: float = Field(0.0, ge=0)
    prefill_overhead_stddev: float = Field(0.0, ge=0)
    prefill_distribution: Shape = Shape.normal
    prefill_ms_per_token: float = Field(0.0, ge=0)
    itl: float = Field(0.0, ge=0)
    itl_stddev: float = Field(0.0, ge=0)
    itl_distribution: Shape = Shape.normal

    @property
    def prefill(self) -> Dist:
        return Dist(self.prefill_overhead, self.prefill_overhead_stddev, self.prefill_distribution)

    @property
    def itl_dist(self) -> Dist:
        return Dist(self.itl, self.itl_stddev, self.itl_distribution)

    @property
    def instant(self) -> bool:
        return not (self.prefill_overhead or self.prefill_ms_per_token or self.itl)


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, Profile] = {}
    models: dict[str, str] = {}  # model ID -> profile name


def load_profiles(path: str | Path | None) -> ProfileFile:
    """The shipped profiles, plus (overriding by name) those of ``path``."""
    shipped = resources.files("llmsim").joinpath("profiles.yaml").read_text()
    merged = ProfileFile.model_validate(yaml.safe_load(shipped))
    if path:
        path = Path(path)
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        extra = ProfileFile.model_validate(data or {})
        merged = ProfileFile(
            profiles={**merged.profiles, **extra.profiles}, models={**merged.models, **extra.models}
        )
    for model, name in merged.models.items():
        if name not in merged.profiles:
            raise ValueError(f"model {model!r} refers to unknown profile {name!r}")
    return merged


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's timing, in seconds."""

    prefill: float  # from the end of the queue wait to the first token
    itls: list[float] = field(default_factory=list)  # itls[k]: gap before content token k+1

    @property
    def instant(self) -> bool:
        return self.prefill == 0 and not any(self.itls)


@dataclass(slots=True)
class Overrides:
    """Per-request overrides from ``x-llmsim-*`` headers, for deterministic gateway tests."""

    ttft_ms: float | None = None
    itl_ms: float | None = None
    output_tokens: int | None = None


_OVERRIDES = {
    b"x-llmsim-ttft-ms": ("ttft_ms", float),
    b"x-llmsim-itl-ms": ("itl_ms", float),
    b"x-llmsim-output-tokens": ("output_tokens", int),
}


NO_OVERRIDES = Overrides()
INSTANT = Plan(0.0)


def overrides_from(headers: list[tuple[bytes, bytes]]) -> Overrides:
    overrides = NO_OVERRIDES
    for name, value in headers:
        if name.startswith(b"x-llmsim-") and name in _OVERRIDES:
            if overrides is NO_OVERRIDES:
                overrides = Overrides()
            field_name, kind = _OVERRIDES[name]
            try:
                number = kind(value.decode("latin-1"))
            except ValueError:
                number = -1
            if number < 0 or (kind is int and number < 1) or not math.isfinite(number):
                header = name.decode()
                raise APIError(
                    400,
                    f"Invalid header {header}: expected a positive number, got {value.decode('latin-1')!r}.",
                    header,
                    "invalid_value",
                )
            setattr(overrides, field_name, number)
    return overrides


class LatencyModel:
    def __init__(self, default: Profile, per_model: dict[str, Profile], seed: int | None) -> None:
        self.default = default
        self.per_model = per_model
        self.rng = random.Random(seed)

    def profile(self, model: str) -> Profile:
        return self.per_model.get(model, self.default)

    def plan(
        self, model: str, prompt_tokens: int, output_tokens: int, overrides: Overrides, slowdown: float
    ) -> Plan:
        profile = self.profile(model)
        if overrides is NO_OVERRIDES and profile.instant:
            return INSTANT
        if overrides.ttft_ms is not None:
            prefill = overrides.ttft_ms / 1000
        else:
            prefill = (profile.prefill.sample(self.rng) + profile.prefill_ms_per_token * prompt_tokens) / 1000
        gaps = max(0, output_tokens - 1)
        if overrides.itl_ms is not None:
            itls = [overrides.itl_ms / 1000] * gaps
        elif profile.itl:
            itl = profile.itl_dist
            itls = [itl.sample(self.rng) * slowdown / 1000 for _ in range(gaps)]
        else:
            itls = [0.0] * gaps
        return Plan(prefill, itls)


class Pacer:
    """Waits until each token's absolute deadline; notices a client that went away."""

    def __init__(self, plan: Plan, receive: Receive, start: float) -> None:
        self.start = start  # time.monotonic() when the request's clock started
        self.deadlines = [plan.prefill]
        for gap in plan.itls:
            self.deadlines.append(self.deadlines[-1] + gap)
        self.receive = receive
        self._disconnect: asyncio.Future[Any] | None = None

    async def until(self, position: int) -> bool:
        """Wait for token ``position``'s deadline; False once the client has disconnected.

        A plain sleep per token (the cheapest timer asyncio has) with a disconnect listener on
        the side: a client that went away is noticed at the next token.
        """
        deadline = self.deadlines[min(position, len(self.deadlines) - 1)]
        delay = self.start + deadline - time.monotonic()
        if delay > 0:
            if self._disconnect is None:
                # After the body is read, receive() returns only when the client disconnects.
                self._disconnect = asyncio.ensure_future(self.receive())
            await asyncio.sleep(delay)
        return self._disconnect is None or not self._disconnect.done()

    def close(self) -> None:
        if self._disconnect is not None and not self._disconnect.done():
            self._disconnect.cancel()


def from_settings(settings: Settings) -> LatencyModel:
    """The flags make the default profile; --profile replaces it; --profiles maps models."""
    shipped = load_profiles(settings.profiles)
    if settings.profile:
        if settings.profile not in shipped.profiles:
            known = ", ".join(sorted(shipped.profiles))
            raise ValueError(f"unknown latency profile {settings.profile!r} (known: {known})")
        default = shipped.profiles[settings.profile]
    else:
        default = Profile(**{name: getattr(settings, name) for name in _FLAG_FIELDS})
    per_model = {model: shipped.profiles[name] for model, name in shipped.models.items()}
    return LatencyModel(default, per_model, settings.latency_seed)


_FLAG_FIELDS = [name for name in Profile.model_fields if name not in ("description", "source")]
