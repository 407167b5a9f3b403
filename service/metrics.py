"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.model_manager import ManagedModel, ModelState

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, models: Callable[[], Iterable[ManagedModel]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("jarvis_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "jarvis_request_duration_seconds", "Request duration by route", ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.ttft_seconds = Histogram(
            "jarvis_time_to_first_token_seconds", "Time to first token", ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.prompt_tokens = Counter("jarvis_prompt_tokens", "Prompt tokens", ["model"], registry=self.registry)
        self.cached_tokens = Counter(
            "jarvis_cached_prompt_tokens", "Prompt tokens served from the cache, by where the cached prefix came from "
            "(slot: the request's own slot; copy: another slot; disk: restored after a restart or unload; warm: a warm prompt)",
            ["model", "source"], registry=self.registry,
        )
        self.generated_tokens = Counter("jarvis_generated_tokens", "Generated tokens", ["model"], registry=self.registry)
        self.generation_seconds = Counter(
            "jarvis_generation_seconds", "Seconds from a request's first token to its last (decode rate: generated tokens over these)",
            ["model"], registry=self.registry,
        )
        self.registry.register(_ModelCollector(models))

    def observe_generation(
        self, model: str, ttft: float, prompt: int, cached: int, generated: int, source: str | None = None, decode_seconds: float = 0.0
    ) -> None:
        self.ttft_seconds.labels(model).observe(ttft)
        self.generation_seconds.labels(model).inc(decode_seconds)
        self.prompt_tokens.labels(model).inc(prompt)
        if cached:
            self.cached_tokens.labels(model, source or "slot").inc(cached)
        self.generated_tokens.labels(model).inc(generated)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector:
    """Model states, load times and engine load, read at scrape time."""

    def __init__(self, models: Callable[[], Iterable[ManagedModel]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("jarvis_model_state", "1 for the model's current state", labels=["model", "state"])
        load = GaugeMetricFamily("jarvis_model_load_seconds", "Seconds the last load took", labels=["model"])
        busy = GaugeMetricFamily("jarvis_busy_slots", "Sequences being generated", labels=["model"])
        queue = GaugeMetricFamily("jarvis_queue_length", "Requests waiting for a slot", labels=["model"])
        for model in self._models():
            alias = model.entry.alias
            for candidate in ModelState:
                state.add_metric([alias, candidate.value], 1.0 if model.state == candidate else 0.0)
            if model.load_seconds is not None:
                load.add_metric([alias], model.load_seconds)
            stats = model.status()["engine_stats"] or {}
            busy.add_metric([alias], float(stats.get("busy_slots", model.in_flight)))
            queue.add_metric([alias], float(stats.get("queue_length", 0)))
        yield from (state, load, busy, queue)
        yield from _upstream_metrics(list(self._models()))


def _upstream_metrics(models: list[ManagedModel]) -> Iterator[Metric]:
    """Per upstream of each remote model: health, load, latency, failures; and fallbacks served."""
    labels = ["model", "upstream"]
    up = GaugeMetricFamily("jarvis_upstream_up", "1 while the upstream answers its health checks", labels=labels)
    in_flight = GaugeMetricFamily("jarvis_upstream_in_flight", "Requests running on the upstream", labels=labels)
    ttft = GaugeMetricFamily("jarvis_upstream_ttft_seconds", "Moving average of the upstream's time to first token", labels=labels)
    requests = CounterMetricFamily("jarvis_upstream_requests", "Requests sent to the upstream", labels=labels)
    failures = CounterMetricFamily("jarvis_upstream_failures", "Requests the upstream failed (then tried elsewhere or cut)", labels=labels)
    restarts = CounterMetricFamily("jarvis_upstream_restarts", "Restarts of a managed upstream after it died", labels=labels)
    fallbacks = CounterMetricFamily("jarvis_model_fallbacks", "Requests the model's fallback served because it could not", labels=["model", "fallback"])
    for model in models:
        alias = model.entry.alias
        if model.entry.fallback is not None:
            fallbacks.add_metric([alias, model.entry.fallback], float(model.fallbacks))
        stats = model.status()["engine_stats"] or {}
        for upstream in stats.get("upstreams", []):
            key = [alias, upstream["name"]]
            up.add_metric(key, 1.0 if upstream["healthy"] else 0.0)
            in_flight.add_metric(key, float(upstream["in_flight"]))
            requests.add_metric(key, float(upstream["requests"]))
            failures.add_metric(key, float(upstream["failures"]))
            if upstream["ttft_seconds"] is not None:
                ttft.add_metric(key, float(upstream["ttft_seconds"]))
            if upstream["managed"] is not None:
                restarts.add_metric(key, float(upstream["managed"]["restarts"]))
    yield from (up, in_flight, ttft, requests, failures, restarts, fallbacks)
