"""llmsim.metrics: vLLM-compatible names, labels and types, parsed back from render()."""

from __future__ import annotations

import random

from prometheus_client.parser import text_string_to_metric_families

from llmsim.metrics import ITL_BUCKETS, Metrics, _Histogram


def _families(metrics: Metrics) -> dict:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def _value(families: dict, sample_name: str, **labels) -> float:
    family_name = sample_name
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in families:
            family_name = sample_name.removesuffix(suffix)
    for sample in families[family_name].samples:
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise KeyError((sample_name, labels))


def test_names_types_and_labels() -> None:
    state = {"running": 3, "waiting": 2}
    metrics = Metrics(
        "sim-1",
        ["gpt-4o", "gpt-4o-mini"],
        running=lambda: state["running"],
        waiting=lambda: state["waiting"],
        max_running=4,
    )
    families = _families(metrics)
    expected = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:request_success": "counter",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram",
        "llmsim_requests": "counter",
        "llmsim_faults": "counter",
        "llmsim_rate_limited": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    assert _value(families, "vllm:num_requests_running", model_name="gpt-4o", instance="sim-1") == 3
    assert _value(families, "vllm:num_requests_waiting", engine="0") == 2
    assert _value(families, "vllm:kv_cache_usage_perc") == 0.75
    # Series exist from the start, per model and finish reason, as on vLLM.
    assert (
        _value(families, "vllm:request_success_total", model_name="gpt-4o-mini", finished_reason="length")
        == 0
    )
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["instance"] == "sim-1", sample
    state["running"] = 1
    assert _value(_families(metrics), "vllm:num_requests_running") == 1


def test_counters_and_histograms_move() -> None:
    metrics = Metrics("sim-2", ["gpt-4o"])
    metrics.queue_time("gpt-4o", 0.4)
    metrics.first_token("gpt-4o", 0.03)
    metrics.inter_token("gpt-4o", [0.02, 0.02, 0.2, 100.0])
    metrics.inter_token("gpt-4o", [])
    metrics.finished("gpt-4o", 200, prompt_tokens=12, completion_tokens=5, e2e_s=1.2)
    metrics.finished("gpt-4o", 200, prompt_tokens=3, completion_tokens=1, e2e_s=0.1, finish_reason="length")
    metrics.finished("gpt-4o", 429, endpoint="/v1/chat/completions")
    metrics.finished("nope", 404)
    metrics.fault("server_error")
    metrics.fault("server_error")
    metrics.rate_limited("tokens")
    f = _families(metrics)
    labels = {"model_name": "gpt-4o"}
    assert _value(f, "vllm:request_success_total", finished_reason="stop", **labels) == 1
    assert _value(f, "vllm:request_success_total", finished_reason="length", **labels) == 1
    assert _value(f, "vllm:prompt_tokens_total", **labels) == 15
    assert _value(f, "vllm:generation_tokens_total", **labels) == 6
    assert _value(f, "vllm:time_to_first_token_seconds_bucket", le="0.02", **labels) == 0
    assert _value(f, "vllm:time_to_first_token_seconds_bucket", le="0.04", **labels) == 1
    itl = "vllm:inter_token_latency_seconds"
    assert _value(f, f"{itl}_bucket", le="0.025", **labels) == 2
    assert _value(f, f"{itl}_bucket", le="0.2", **labels) == 3  # le: a gap equal to a bound is in it
    assert _value(f, f"{itl}_bucket", le="80.0", **labels) == 3
    assert _value(f, f"{itl}_bucket", le="+Inf", **labels) == 4
    assert _value(f, f"{itl}_count", **labels) == 4
    assert abs(_value(f, f"{itl}_sum", **labels) - 100.24) < 1e-9
    assert _value(f, "vllm:e2e_request_latency_seconds_count", **labels) == 2  # the 429 is not a success
    assert _value(f, "vllm:request_queue_time_seconds_bucket", le="0.5", **labels) == 1
    requests = "llmsim_requests_total"
    assert _value(f, requests, endpoint="/v1/chat/completions", model="gpt-4o", status="200") == 2
    assert _value(f, requests, model="gpt-4o", status="429") == 1
    assert _value(f, requests, model="nope", status="404") == 1
    assert _value(f, "llmsim_faults_total", type="server_error") == 2
    assert _value(f, "llmsim_rate_limited_total", limit="tokens") == 1


def test_model_labels_are_bounded() -> None:
    metrics = Metrics("sim-3", ["gpt-4o"])
    for i in range(500):
        metrics.finished(f"random-{i}", 404)
    families = _families(metrics)
    models = {s.labels["model"] for s in families["llmsim_requests"].samples}
    assert len(models) <= 101 and "other" in models


def test_own_registry_per_instance() -> None:
    a, b = Metrics("a", ["m"]), Metrics("b", ["m"])
    a.fault("auth")
    assert _value(_families(a), "llmsim_faults_total", type="auth") == 1
    assert "llmsim_faults_total" not in {s.name for s in _families(b)["llmsim_faults"].samples}


def test_observe_many_matches_one_by_one() -> None:
    rng = random.Random(1)
    choices = [0.0, 0.01, 0.025, 0.2, 80.0, 81.0]
    for _ in range(500):
        values = [rng.choice([*choices, rng.expovariate(3)]) for _ in range(rng.randint(1, 40))]
        many, single = _Histogram(ITL_BUCKETS), _Histogram(ITL_BUCKETS)
        many.observe_many(values)
        for value in values:
            single.observe(value)
        assert many.counts == single.counts and abs(many.sum - single.sum) < 1e-9
