"""Does a heavy grammar stall the other slots? Plain streamed chats on the llama.cpp engine, alone
and while a request constrained by a 1,000-value enum (the largest a schema may list) and a
nested-object schema runs beside them, in one run.

    python -m bench.bench_grammar_isolation [--rounds 3]

Prints the plain chats' decode rate and TTFT in both cases and their ratio (1.0 = no stall), and
how long the constrained requests took."""

from __future__ import annotations

import argparse
import logging
import threading
import time

import httpx

from bench.harness import jarvis_server, median, setup_logging, stream

logger = logging.getLogger("bench")

PLAIN = {"model": "x", "max_tokens": 48, "temperature": 0, "messages": [{"role": "user", "content": "Write about the sea."}]}
HEAVY = [
    {"enum": [f"device.{area}_{index}" for area in ("kitchen", "hall", "garden", "garage") for index in range(250)]},
    {"type": "object", "properties": {f"room_{i}": {"type": "object", "properties": {"on": {"type": "boolean"}, "level": {"type": "integer"}}} for i in range(40)}},
]


def background(client: httpx.Client, stop: threading.Event, seconds: list[float], constrained: bool) -> None:
    """Requests one after another beside the measured chats: constrained by the heavy schemas, or
    the same requests unconstrained (the baseline: two sequences share every decode step)."""
    while not stop.is_set():
        for schema in HEAVY:
            started = time.perf_counter()
            body = {**PLAIN, "max_tokens": 24}
            if constrained:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            client.post("/v1/chat/completions", json=body).raise_for_status()
            seconds.append(time.perf_counter() - started)


def beside(server_url: str, client: httpx.Client, rounds: int, constrained: bool) -> tuple[float, float, list[float]]:
    stop, seconds = threading.Event(), []
    thread = threading.Thread(target=background, args=(httpx.Client(base_url=server_url, timeout=600), stop, seconds, constrained))
    thread.start()
    time.sleep(1)
    rate, ttft = plain_rates(client, rounds)
    stop.set()
    thread.join()
    return rate, ttft, seconds


def plain_rates(client: httpx.Client, rounds: int) -> tuple[float, float]:
    timings = [stream(client, "/v1/chat/completions", PLAIN) for _ in range(rounds)]
    return median([timing.decode_rate() for timing in timings]), median([timing.ttft for timing in timings])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    setup_logging()
    with jarvis_server(JARVIS_PARALLEL="2", JARVIS_CONTEXT_SIZE="2048") as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
        plain_rates(client, 1)  # warm: the prompt cached
        alone_rate, alone_ttft = plain_rates(client, args.rounds)
        free_rate, free_ttft, _ = beside(server.base_url, client, args.rounds, constrained=False)
        heavy_rate, heavy_ttft, seconds = beside(server.base_url, client, args.rounds, constrained=True)
    logger.info("plain chat alone: %.1f tok/s, TTFT %.3f s", alone_rate, alone_ttft)
    logger.info("beside unconstrained requests: %.1f tok/s, TTFT %.3f s", free_rate, free_ttft)
    logger.info("beside heavy-grammar requests: %.1f tok/s, TTFT %.3f s: %.2f of the unconstrained case (1.00 = no stall)",
                heavy_rate, heavy_ttft, heavy_rate / free_rate)
    logger.info("heavy constrained requests: %d, median %.2f s each", len(seconds), median(seconds))


if __name__ == "__main__":
    main()
