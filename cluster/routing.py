"""Statistics that turn the instance IDs a probe saw into a verdict on the gateway's routing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy
from scipy.stats import chisquare


def parse_expect(spec: str) -> dict[str, float] | None:
    """``uniform`` -> None; ``sim-1=3,sim-2=1`` -> weights. Raises ValueError on anything else."""
    if spec.strip().lower() == "uniform":
        return None
    weights: dict[str, float] = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected 'uniform' or ID=WEIGHT pairs, got {item.strip()!r}")
        weight = float(value)
        if weight < 0:
            raise ValueError(f"weight of {name.strip()} must not be negative")
        weights[name.strip()] = weight
    if not any(weights.values()):
        raise ValueError("at least one weight must be positive")
    return weights


def complete_weights(named: Mapping[str, float], instances: Sequence[str]) -> dict[str, float]:
    """``--expect sim-1=3`` over sim-1..sim-4: the instances not named keep weight 1, as in nginx,
    haproxy and LiteLLM; name one with weight 0 to expect it to get nothing."""
    weights = {k: 1.0 for k in instances if k not in named}
    return {**weights, **named}


def describe(share: Mapping[str, float]) -> str:
    """What a distribution was tested against, in words: "a uniform spread over 4 instances" or
    "weights sim-1=3, sim-2=1, sim-3=1"."""
    positive = {k: v for k, v in share.items() if v > 0}
    if len(set(positive.values())) <= 1 and len(positive) == len(share):
        return f"a uniform spread over {len(share)} instance{'s' * (len(share) != 1)}"
    smallest = min(positive.values()) if positive else 1.0
    parts = [f"{k}={v / smallest:.3g}" for k, v in sorted(share.items(), key=lambda kv: _natural(kv[0]))]
    return "weights " + ", ".join(parts)


@dataclass
class Distribution:
    counts: dict[str, int]  # every expected instance (0 when it got nothing) plus any unexpected
    expected_share: dict[str, float]
    p_value: float
    alpha: float
    starved: list[str] = field(default_factory=list)  # expected to get traffic, got none
    unexpected: list[str] = field(default_factory=list)  # got traffic, not expected to
    unnamed_slots: int = 0  # expected instances known only by count, not seen
    extra: int = 0  # distinct instances seen beyond an expected count

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha and not (
            self.starved or self.unexpected or self.unnamed_slots or self.extra
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def distribution(
    seen: Mapping[str, int],
    alpha: float,
    weights: Mapping[str, float] | None = None,
    instances: Sequence[str] | int | None = None,
) -> Distribution:
    """Chi-square goodness of fit of the observed counts against the expected shares.

    ``instances`` names the IDs that should get traffic (or only says how many); with neither
    that nor weights, the instances seen are assumed to be all there are.
    """
    counts = Counter({k: v for k, v in seen.items() if v})
    unnamed = 0
    extra = max(0, len(counts) - instances) if isinstance(instances, int) and weights is None else 0
    if weights is not None:
        expected_ids = [k for k, w in weights.items() if w > 0]
        share = {k: weights[k] / sum(weights.values()) for k in weights}
    else:
        if isinstance(instances, int):
            expected_ids = sorted(counts)
            unnamed = max(0, instances - len(expected_ids))
            slots = len(expected_ids) + unnamed
        else:
            expected_ids = list(instances) if instances else sorted(counts)
            slots = len(expected_ids)
        share = {k: 1 / slots for k in expected_ids}
    for k in share:
        counts.setdefault(k, 0)
    unexpected = sorted(k for k in counts if counts[k] and share.get(k, 0) == 0)
    starved = sorted(k for k in expected_ids if counts[k] == 0 and share.get(k, 0) > 0)
    total = sum(counts.values())
    if total == 0:
        return Distribution(dict(counts), share, 0.0, alpha, starved, unexpected, unnamed, extra)
    names = [k for k in share if share[k] > 0]
    observed = [counts[k] for k in names] + [0] * unnamed
    expected_counts = [share[k] * total for k in names] + [total / (len(names) + unnamed)] * unnamed
    if unexpected:
        p_value = 0.0  # traffic where none was expected cannot fit any weighting
    elif len(observed) < 2:
        p_value = 1.0
    else:
        # Rescale to the observed total: shares of the named instances may not add up to 1.
        scale = sum(observed) / sum(expected_counts)
        p_value = float(chisquare(observed, [e * scale for e in expected_counts]).pvalue)
    ordered = dict(sorted(counts.items(), key=lambda kv: _natural(kv[0])))
    return Distribution(ordered, share, p_value, alpha, starved, unexpected, unnamed, extra)


@dataclass
class Affinity:
    sessions: dict[str, Counter[str]]  # session value -> instances it landed on

    @property
    def violations(self) -> dict[str, Counter[str]]:
        return {s: c for s, c in self.sessions.items() if len(c) > 1}

    @property
    def passed(self) -> bool:
        return bool(self.sessions) and not self.violations


def affinity(pairs: Sequence[tuple[str, str]]) -> Affinity:
    """``pairs`` of (session value, instance ID): each session must stay on one instance."""
    sessions: dict[str, Counter[str]] = {}
    for session, instance in pairs:
        sessions.setdefault(session, Counter())[instance] += 1
    return Affinity(sessions)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (an observed value, not an interpolation); None for no values."""
    if not values:
        return None
    return float(numpy.percentile(values, q, method="inverted_cdf"))


def _natural(key: str) -> tuple:
    """sim-2 before sim-10."""
    head = key.rstrip("0123456789")
    tail = key[len(head) :]
    return (head, int(tail) if tail else -1)
