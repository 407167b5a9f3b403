"""Benchmark: how evenly a stream's tokens reach the client, on each engine, with the machine idle
and with its cores busy with other work (processes spinning beside the server). A voice client
speaks as tokens arrive, so a long silence in the middle of an answer is what it hears.

Per engine: the longest gap between two chunks of a 48-token stream (median over the runs), idle
and loaded, as a ratio of loaded to idle; and how many loaded streams arrived as one burst (the
first chunk after 90% of the stream's time). Both engines run in the same invocation.

Run: .venv/bin/python -m bench.bench_stream_evenness [--runs 8] [--spinners 6]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Iterator

import httpx

from bench.harness import Server, Timing, jarvis_server, median, setup_logging, stream

logger = logging.getLogger("bench")

PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
TOKENS = 48
SPINNER_LIFETIME_SECONDS = 600  # spinners stop by themselves even if this process is killed
ENGINES = {
    "llama_cpp": {"JARVIS_INFERENCE_ENGINE": "llama_cpp", "JARVIS_CONTEXT_SIZE": "2048"},
    "vllm": {"JARVIS_INFERENCE_ENGINE": "vllm", "JARVIS_CONTEXT_SIZE": "2048", "JARVIS_VLLM_MAX_MODEL_LEN": "2048"},
}


def spin(until: float) -> None:
    while time.monotonic() < until:
        pass


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """`count` processes that keep a core busy each, stopped on leaving."""
    until = time.monotonic() + SPINNER_LIFETIME_SECONDS
    spinners = [multiprocessing.Process(target=spin, args=(until,), daemon=True) for _ in range(count)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def one_burst(timing: Timing) -> bool:
    """The first chunk came after 90% of the time the stream took: the answer arrived at once."""
    assert timing.first is not None and timing.last is not None
    return timing.first - timing.sent >= 0.9 * (timing.last - timing.sent)


def streams(server: Server, runs: int) -> list[Timing]:
    body = {"model": "x", "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0}
    with httpx.Client(base_url=server.api_url, timeout=300) as client:
        stream(client, "/completions", body)  # warm-up
        timings = [stream(client, "/completions", body) for _ in range(runs)]
    for timing in timings:
        assert timing.finish_reason == "length", timing
    return timings


def measure(engine: str, runs: int, spinners: int) -> dict[str, float]:
    with jarvis_server(engine, **ENGINES[engine]) as server:
        idle = streams(server, runs)
        with busy_cores(spinners):
            loaded = streams(server, runs)
    figures = {
        "idle_longest_gap": median([timing.longest_gap for timing in idle]),
        "loaded_longest_gap": median([timing.longest_gap for timing in loaded]),
        "loaded_worst_gap": max(timing.longest_gap for timing in loaded),
        "loaded_one_burst": sum(one_burst(timing) for timing in loaded),
        "idle_seconds": median([timing.last - timing.sent for timing in idle if timing.last is not None]),
        "loaded_seconds": median([timing.last - timing.sent for timing in loaded if timing.last is not None]),
    }
    logger.info("%s: %s", engine, {name: round(value, 3) for name, value in figures.items()})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="streams per engine and condition")
    parser.add_argument("--spinners", type=int, default=6, help="busy processes beside the server")
    arguments = parser.parse_args()
    setup_logging()
    results = {engine: measure(engine, arguments.runs, arguments.spinners) for engine in ENGINES}
    print(f"\n{TOKENS}-token streams, {arguments.runs} per condition, {arguments.spinners} busy processes when loaded")
    print(f"{'engine':<10} {'longest gap idle':>17} {'loaded':>8} {'loaded/idle':>12} {'worst loaded':>13} {'one burst':>10}")
    for engine, figures in results.items():
        ratio = figures["loaded_longest_gap"] / figures["idle_longest_gap"]
        print(
            f"{engine:<10} {figures['idle_longest_gap']:>15.3f} s {figures['loaded_longest_gap']:>6.3f} s {ratio:>12.1f}"
            f" {figures['loaded_worst_gap']:>11.3f} s {int(figures['loaded_one_burst']):>6}/{arguments.runs}"
        )


if __name__ == "__main__":
    main()
