"""When each token leaves: the latency model every API surface shares.

Time to first token = queue wait + prefill, prefill = overhead + ms-per-token × the prompt tokens
not read from the prompt cache, + the hidden reasoning tokens at decode speed (one ITL each: a
reasoning model thinks before its first visible token); then one inter-token latency (ITL) between
content chunks. Each quantity is a distribution
(constant, normal or lognormal), sampled per request and clamped at zero. Named profiles (in a
YAML or TOML file) give models their own speeds.

Deadlines are absolute (start + TTFT + the ITLs so far, on the monotonic clock), so a late
wake-up is made up at the next token instead of pushing every later token back: many concurrent
streams do not make the simulated clock drift.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmsim.errors import APIError
from llmsim.identity import USAGE_HEADER
from llmsim.presence import Presence

if TYPE_CHECKING:
    from llmsim.generation import UsageOverride
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
    """The shipped profiles, plus (overriding by name) those of ``path``.

    ``path`` is read as every operator file is (a regular file, bounded); its errors name the file
    and a position, never its text, since a typo can point --profiles at any file.
    """
    from llmsim.settings import FileError, describe_invalid, parse_toml, parse_yaml, read_file, schema_names

    shipped = resources.files("llmsim").joinpath("profiles.yaml").read_text()
    merged = ProfileFile.model_validate(yaml.safe_load(shipped))
    if not path:
        return merged
    text = read_file(path, "profiles file")
    data = parse_toml(text, path) if Path(path).suffix == ".toml" else parse_yaml(text, path)
    try:
        extra = ProfileFile.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "model_type" and not first["loc"]:
            raise FileError(
                f"{path}: the profiles file should be a mapping with `profiles` and `models`"
            ) from None
        raise FileError(
            f"{path}: {describe_invalid(exc, data, schema_names(ProfileFile, Profile))}"
        ) from None
    merged = ProfileFile(
        profiles={**merged.profiles, **extra.profiles}, models={**merged.models, **extra.models}
    )
    for position, name in enumerate(extra.models.values(), 1):
        if name not in merged.profiles:
            raise FileError(f"{path}: models[key {position}] names a profile that is not defined")
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
    retry_after: float | None = None  # seconds told to a client answered 429/503 by a fault
    usage: UsageOverride | None = None  # the exact usage to report (x-llmsim-usage)


# header -> (field, type, the largest value accepted): an hour to the first token, a minute a
# token, and no more tokens than a model's largest output.
MAX_OUTPUT_TOKENS = 65_536
_OVERRIDES = {
    b"x-llmsim-ttft-ms": ("ttft_ms", float, 3_600_000),
    b"x-llmsim-itl-ms": ("itl_ms", float, 60_000),
    b"x-llmsim-output-tokens": ("output_tokens", int, MAX_OUTPUT_TOKENS),
    b"x-llmsim-retry-after": ("retry_after", float, 3600),
}


_USAGE = USAGE_HEADER.encode()

NO_OVERRIDES = Overrides()
INSTANT = Plan(0.0)


def overrides_from(headers: list[tuple[bytes, bytes]]) -> Overrides:
    overrides = NO_OVERRIDES
    for name, value in headers:
        if name == _USAGE:
            # Here, not at the top: settings imports this module, and generation the tokenizers.
            from llmsim.generation import parse_usage

            text = value.decode("latin-1")
            try:
                usage = parse_usage(text)
            except ValueError as exc:
                raise APIError(
                    400,
                    f"Invalid header {USAGE_HEADER}: {exc} (e.g. prompt=1200,completion=40,cached=1024,"
                    f"reasoning=0), got {text[:80]!r}.",
                    USAGE_HEADER,
                    "invalid_value",
                ) from None
            if overrides is NO_OVERRIDES:
                overrides = Overrides()
            overrides.usage = usage
        elif name.startswith(b"x-llmsim-") and name in _OVERRIDES:
            if overrides is NO_OVERRIDES:
                overrides = Overrides()
            field_name, kind, largest = _OVERRIDES[name]
            try:
                number = kind(value.decode("latin-1"))
            except ValueError:
                number = -1
            if not (0 <= number <= largest) or (kind is int and number < 1):  # NaN fails too
                header = name.decode()
                raise APIError(
                    400,
                    f"Invalid header {header}: expected a number from {int(kind is int)} to {largest}, "
                    f"got {value.decode('latin-1')[:40]!r}.",
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
        self,
        model: str,
        prompt_tokens: int,
        output_tokens: int,
        overrides: Overrides,
        slowdown: float,
        cached_tokens: int = 0,
        hidden_tokens: int = 0,
    ) -> Plan:
        """``cached_tokens`` of the prompt cost no prefill; ``hidden_tokens`` (reasoning) are
        decoded, one ITL each, before the first token. x-llmsim-ttft-ms sets the whole prefill."""
        profile = self.profile(model)
        if overrides is NO_OVERRIDES and profile.instant:
            return INSTANT
        if overrides.ttft_ms is not None:
            prefill = overrides.ttft_ms / 1000
        else:
            uncached = max(0, prompt_tokens - cached_tokens)
            prefill = (profile.prefill.sample(self.rng) + profile.prefill_ms_per_token * uncached) / 1000
            if hidden_tokens > 0:
                prefill += self._thinking(profile, hidden_tokens, overrides, slowdown)
        gaps = max(0, output_tokens - 1)
        if overrides.itl_ms is not None:
            itls = [overrides.itl_ms / 1000] * gaps
        elif profile.itl:
            itl = profile.itl_dist
            itls = [itl.sample(self.rng) * slowdown / 1000 for _ in range(gaps)]
        else:
            itls = [0.0] * gaps
        return Plan(prefill, itls)

    def _thinking(self, profile: Profile, tokens: int, overrides: Overrides, slowdown: float) -> float:
        """Seconds to decode ``tokens`` hidden tokens: the sum of as many ITLs, drawn at once as the
        normal distribution their sum tends to (thousands of samples a request would cost more
        than the rest of the plan)."""
        if overrides.itl_ms is not None:
            return tokens * overrides.itl_ms / 1000
        itl = profile.itl_dist
        if not itl.mean:
            return 0.0
        spread = 0.0 if itl.shape is Shape.constant else itl.stddev * math.sqrt(tokens)
        total = self.rng.gauss(itl.mean * tokens, spread) if spread else itl.mean * tokens
        return max(0.0, total) * slowdown / 1000


class Pacer:
    """Waits until each token's absolute deadline; a client that leaves ends the wait at once."""

    def __init__(self, plan: Plan, presence: Presence, start: float) -> None:
        self.start = start  # time.monotonic() when the request's clock started
        self.deadlines = [plan.prefill]
        for gap in plan.itls:
            self.deadlines.append(self.deadlines[-1] + gap)
        self.presence = presence

    async def until(self, position: int) -> None:
        """Wait for token ``position``'s deadline; raises ClientGone if the client leaves."""
        deadline = self.deadlines[min(position, len(self.deadlines) - 1)]
        delay = self.start + deadline - time.monotonic()
        if delay > 0:
            await self.presence.sleep(delay)


def from_settings(settings: Settings, profiles: ProfileFile | None = None) -> LatencyModel:
    """The flags make the default profile; --profile replaces it; --profiles maps models.

    ``profiles`` is the loaded --profiles file (the engine keeps it, so a PATCH picking a profile
    reads no file); without it the file is read now.
    """
    shipped = load_profiles(settings.profiles) if profiles is None else profiles
    if settings.profile:
        if settings.profile not in shipped.profiles:
            # The names are the catalogue a client may choose from: the shipped ones and the
            # operator's (the --profiles file was validated as profiles at startup).
            known = ", ".join(sorted(shipped.profiles))
            raise ValueError(f"unknown latency profile {settings.profile!r} (known: {known})")
        default = shipped.profiles[settings.profile]
    else:
        default = Profile(**{name: getattr(settings, name) for name in _FLAG_FIELDS})
    per_model = {model: shipped.profiles[name] for model, name in shipped.models.items()}
    return LatencyModel(default, per_model, settings.latency_seed)


_FLAG_FIELDS = [name for name in Profile.model_fields if name not in ("description", "source")]
