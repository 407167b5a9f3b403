"""The server's own metrics over the last minutes, for the settings page's charts: the Prometheus
counters are read every few seconds and each pair of readings becomes one point (requests per
minute, mean time to first token, decode rate, prompt-cache hit rate, process memory). Kept here,
not in the browser, so a page opened now sees the last minutes too."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Histogram

from service.metrics import Metrics

# Requests to these routes are the operators' and monitors' own, not the model's work.
OPERATOR_ROUTES = ("/admin", "/health", "/metrics", "/ui", "unmatched")


def process_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class Reading:
    """Counter totals since the start, at one moment."""

    at: float  # seconds since the epoch
    requests: float  # to the model APIs
    ttft_sum: float
    ttft_count: float
    prompt_tokens: float
    cached_tokens: float
    generated_tokens: float
    generation_seconds: float
    rss_bytes: int


def _total(metric: Counter | Histogram, suffix: str, skip_routes: bool = False) -> float:
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith(suffix):
                continue
            if skip_routes and sample.labels.get("route", "").startswith(OPERATOR_ROUTES):
                continue
            total += sample.value
    return total


def read(metrics: Metrics) -> Reading:
    return Reading(
        at=time.time(),
        requests=_total(metrics.requests, "_total", skip_routes=True),
        ttft_sum=_total(metrics.ttft_seconds, "_sum"),
        ttft_count=_total(metrics.ttft_seconds, "_count"),
        prompt_tokens=_total(metrics.prompt_tokens, "_total"),
        cached_tokens=_total(metrics.cached_tokens, "_total"),
        generated_tokens=_total(metrics.generated_tokens, "_total"),
        generation_seconds=_total(metrics.generation_seconds, "_total"),
        rss_bytes=process_rss_bytes(),
    )


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def point(before: Reading, after: Reading, minute_before: Reading) -> dict[str, float | int | None]:
    """The figures of the interval between two readings; None where nothing happened (no
    generation: no TTFT to average). Requests per minute are counted over the minute up to the
    point (from `minute_before`), so a request every 10 s reads 6, not a 12-then-0 saw."""
    seconds = max(after.at - before.at, 1e-6)
    generations = after.ttft_count - before.ttft_count
    generated = after.generated_tokens - before.generated_tokens
    return {
        "time": round(after.at, 3),
        "seconds": round(seconds, 3),
        "requests_per_minute": round((after.requests - minute_before.requests) * 60 / max(after.at - minute_before.at, 1e-6), 2),
        "ttft_seconds": _ratio(after.ttft_sum - before.ttft_sum, generations),
        "tokens_per_second": _ratio(generated, after.generation_seconds - before.generation_seconds) if generations else None,
        "cache_hit_rate": _ratio(after.cached_tokens - before.cached_tokens, after.prompt_tokens - before.prompt_tokens),
        "generations": int(generations),
        "rss_bytes": after.rss_bytes,
    }


def points(readings: list[Reading]) -> list[dict[str, float | int | None]]:
    return [point(readings[index - 1], readings[index], _minute_before(readings, index)) for index in range(1, len(readings))]


def _minute_before(readings: list[Reading], index: int) -> Reading:
    """The last reading at least a minute before readings[index]; the first one if none is."""
    target = readings[index].at - 60
    return next((reading for reading in reversed(readings[:index]) if reading.at <= target), readings[0])


class MetricsHistory:
    """Readings every `interval` seconds over `window` seconds; run() takes them."""

    def __init__(self, metrics: Metrics, interval: float = 5.0, window: float = 900.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.window = window
        self._readings: deque[Reading] = deque(maxlen=int(window / interval) + 1)

    def take(self) -> Reading:
        reading = read(self.metrics)
        self._readings.append(reading)
        return reading

    async def run(self) -> None:
        while True:
            self.take()
            await asyncio.sleep(self.interval)

    def report(self) -> dict[str, object]:
        """The points of the window, the last one running up to now (so a request made a second
        ago shows at once)."""
        readings = list(self._readings)
        now = read(self.metrics)
        if readings and now.at - readings[-1].at >= 0.5:
            readings.append(now)
        return {"interval_seconds": self.interval, "window_seconds": self.window, "points": points(readings), "rss_bytes": now.rss_bytes}
