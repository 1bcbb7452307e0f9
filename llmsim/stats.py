"""Per-instance counters, served at /llmsim/stats and read by `llmsim cluster status`."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    by_endpoint: Counter[tuple[str, int]] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.by_endpoint.clear()
        self.faults.clear()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def snapshot(self) -> dict[str, Any]:
        endpoints: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in sorted(self.by_endpoint.items()):
            endpoints.setdefault(endpoint, {})[str(status)] = count
        return {
            "started_at": self.started_at,
            "uptime_s": round(self.uptime_s, 3),
            "in_flight": self.in_flight,
            "requests_total": sum(self.by_endpoint.values()),
            "requests": endpoints,
            "faults": dict(self.faults),
        }
