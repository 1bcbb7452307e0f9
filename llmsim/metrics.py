"""``GET /metrics``: Prometheus text with vLLM's metric names, so vLLM dashboards and scrapers
(Grafana boards, KEDA, the Gateway API inference extension) work unchanged.

vLLM's series (``model_name`` and ``engine`` labels, as vLLM v1 sets them; vLLM's histogram
buckets) plus llmsim's own counters; every series also carries ``instance`` = the instance ID.
Prometheus renames a scraped ``instance`` label to ``exported_instance`` unless the job sets
``honor_labels: true``.

The hot path only adds to plain ints and lists; prometheus_client builds the families at scrape
time (a custom collector on this instance's own registry, not the global one). Counters are
monotonic, as Prometheus expects: /llmsim/reset does not touch them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# vLLM's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort")  # pre-created, as vLLM does; others appear when used
MAX_MODEL_LABELS = 100  # model names past this (unknown ones sent by clients) count as "other"
ENGINE = "0"
# The classic text format: what every scraper reads (prometheus_client >= 0.22 calls 1.0.0 "latest").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def observe_many(self, values: Sequence[float]) -> None:
        """Many observations at the cost of one sort, not one Python-level step each."""
        n = len(values)
        first = values[0]
        counts = self.counts
        if values[-1] == first and values.count(first) == n:  # constant gaps (and the all-zero case)
            counts[bisect_left(self.bounds, first)] += n
        else:
            ordered = sorted(values)
            below = 0  # values <= the previous bound
            for i, bound in enumerate(self.bounds):
                upto = bisect_right(ordered, bound)
                counts[i] += upto - below
                below = upto
                if upto == n:
                    break
            counts[-1] += n - below
        self.sum += sum(values)

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class _ModelStats:
    __slots__ = ("success", "prompt", "generation", "ttft", "itl", "e2e", "queue")

    def __init__(self) -> None:
        self.success: Counter[str] = Counter(dict.fromkeys(FINISH_REASONS, 0))
        self.prompt = 0
        self.generation = 0
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.itl = _Histogram(ITL_BUCKETS)
        self.e2e = _Histogram(REQUEST_LATENCY_BUCKETS)
        self.queue = _Histogram(REQUEST_LATENCY_BUCKETS)


class Metrics:
    """One instance's metrics.

    ``running``/``waiting`` are read at scrape time (the scheduler's counts); the KV-cache usage is
    simulated as running / ``max_running`` (0 when concurrency is unlimited). Those scheduler-wide
    gauges carry the first served model's name, as vLLM labels everything with its first
    served-model name; per-request series carry the model each request asked for.
    """

    def __init__(
        self,
        instance_id: str,
        models: Sequence[str] = ("llmsim",),
        running: Callable[[], int] = lambda: 0,
        waiting: Callable[[], int] = lambda: 0,
        max_running: int = 0,
    ) -> None:
        self.instance = instance_id
        self.primary = models[0] if models else "llmsim"
        self.running, self.waiting, self.max_running = running, waiting, max_running
        self._models: dict[str, _ModelStats] = {model: _ModelStats() for model in models}
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (endpoint, model, status)
        self.faults: Counter[str] = Counter()
        self.rate_limits: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _stats(self, model: str) -> _ModelStats:
        stats = self._models.get(model)
        if stats is None:
            if len(self._models) >= MAX_MODEL_LABELS:
                model = "other"
            stats = self._models.setdefault(model, _ModelStats())
        return stats

    # Per request, in pipeline order.

    def queue_time(self, model: str, seconds: float) -> None:
        self._stats(model).queue.observe(seconds)

    def first_token(self, model: str, seconds: float) -> None:
        self._stats(model).ttft.observe(seconds)

    def inter_token(self, model: str, gaps: Sequence[float]) -> None:
        """All of a request's inter-token gaps (seconds) at once."""
        if gaps:
            self._stats(model).itl.observe_many(gaps)

    def finished(
        self,
        model: str,
        status: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        e2e_s: float | None = None,
        endpoint: str = "/v1/chat/completions",
        finish_reason: str = "stop",
    ) -> None:
        """Every response counts in llmsim_requests_total; a generation (status < 400, or cut
        short: finished_reason "abort", the tokens sent) also in vLLM's success, token and
        end-to-end latency series."""
        stats = self._stats(model)
        label = model if model in self._models else "other"
        self.requests[(endpoint, label, status)] += 1
        if status < 400 or finish_reason == "abort":  # vLLM counts aborts under their own reason
            stats.success[finish_reason] += 1
            stats.prompt += prompt_tokens
            stats.generation += completion_tokens
            if e2e_s is not None:
                stats.e2e.observe(e2e_s)

    def counted(self, endpoint: str, status: int) -> None:
        """A response that generated nothing (health checks, errors before a model was known)."""
        self.requests[(endpoint, "", status)] += 1

    def fault(self, type: str) -> None:
        self.faults[type] += 1

    def rate_limited(self, limit: str) -> None:
        """``limit``: "requests" or "tokens" (the 429's error type)."""
        self.rate_limits[limit] += 1

    def render(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    # The prometheus_client Collector protocol.

    def collect(self) -> Iterator[Metric]:
        inst = self.instance
        vllm_labels = ["model_name", "engine", "instance"]
        primary = [self.primary, ENGINE, inst]
        running = self.running()
        kv = running / self.max_running if self.max_running else 0.0
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", self.waiting()),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (the pre-0.9 name).", kv),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=vllm_labels)
            gauge.add_metric(primary, value)
            yield gauge

        models = list(self._models.items())
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=["model_name", "engine", "finished_reason", "instance"],
        )
        prompt = CounterMetricFamily(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels=vllm_labels
        )
        generation = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=vllm_labels
        )
        for model, stats in models:
            for reason, count in stats.success.items():
                success.add_metric([model, ENGINE, reason, inst], count)
            prompt.add_metric([model, ENGINE, inst], stats.prompt)
            generation.add_metric([model, ENGINE, inst], stats.generation)
        yield from (success, prompt, generation)

        for name, doc, attr in (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", "ttft"),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", "itl"),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", "e2e"),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                "queue",
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=vllm_labels)
            for model, stats in models:
                hist: _Histogram = getattr(stats, attr)
                family.add_metric([model, ENGINE, inst], hist.buckets(), hist.sum)
            yield family

        yield _counter(
            "llmsim_requests",
            "Responses by endpoint, model and status.",
            ["endpoint", "model", "status", "instance"],
            (([e, m, str(s)], n) for (e, m, s), n in sorted(self.requests.items())),
            inst,
        )
        yield _counter(
            "llmsim_faults", "Injected faults by type.", ["type", "instance"], _single(self.faults), inst
        )
        yield _counter(
            "llmsim_rate_limited",
            "Requests refused by the RPM/TPM limits, by limit.",
            ["limit", "instance"],
            _single(self.rate_limits),
            inst,
        )


def _single(counts: Counter[str]) -> Iterable[tuple[list[str], int]]:
    return (([key], n) for key, n in sorted(counts.items()))


def _counter(
    name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], int]], instance: str
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, count in rows:
        family.add_metric([*values, instance], count)
    return family
