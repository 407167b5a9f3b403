"""Benchmark of the llama.cpp engine's batching and prompt cache, on the packaged model.

Everything is measured in one invocation, and reported as ratios against a baseline from the
same run:
  1. single-stream decode rate through our HTTP API vs bare in-process llama-cpp-python;
  2. 4 concurrent streams of 128 tokens: how many complete, aggregate rate vs one stream;
  3. one ~2,000-token system prompt shared by two conversations alternating 4 turns each:
     median warm time to first token vs the cold first turn;
  4. two conversations with different ~2,000-token system prompts alternating: the same ratio;
and 2-4 against llama-cpp-python's own server on the same model.

Run: .venv/bin/python -m bench.bench_llama_batching   (needs bench/requirements.txt for the peer)
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import threading
import time
from dataclasses import dataclass

import httpx

from bench.harness import Server, Timing, jarvis_server, llama_cpp_python_server, median, ratio_line, setup_logging, stream

logger = logging.getLogger("bench")

COUNTING = "Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
DECODE_TOKENS = 128
THREADS = os.cpu_count() or 2
CONTEXT = 4096
ROOMS = ["kitchen", "living room", "hallway", "bedroom", "office", "garage", "garden", "bathroom", "attic", "cellar"]
DEVICES = ["ceiling light", "floor lamp", "smart plug", "thermostat", "speaker", "blind", "fan", "door sensor"]
QUESTIONS = ["Turn on the kitchen light.", "What is on in the office?", "Close the blinds.", "Set the heating to 20."]


def house_prompt(seed: int, sentences: int = 110) -> str:
    """About 2,000 tokens of home description, different for each seed."""
    rng = random.Random(seed)
    lines = [f"You are the voice assistant of house number {seed}. These are its devices:"]
    for index in range(sentences):
        room, device = rng.choice(ROOMS), rng.choice(DEVICES)
        lines.append(f"Device {index}: the {device} in the {room} is {rng.choice(['on', 'off'])}, set to {rng.randrange(100)} percent.")
    return " ".join(lines)


# ---- 1. decode rate -------------------------------------------------------------------------


def bare_decode_rate(model: str, runs: int) -> float:
    """llama-cpp-python's high-level Llama in this process: the baseline for our HTTP path."""
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=CONTEXT, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    rates = []
    for _ in range(runs + 1):  # the first run warms up
        sent = time.perf_counter()
        stamps = [time.perf_counter() for _ in llm.create_completion(COUNTING, max_tokens=DECODE_TOKENS, temperature=0, stream=True)]
        timing = Timing(sent, stamps[0], stamps[-1], len(stamps), "length")
        rates.append(timing.decode_rate())
    del llm
    return median(rates[1:])


def http_decode_rate(server: Server, runs: int) -> float:
    with httpx.Client(base_url=server.api_url, timeout=600) as client:
        timings = [stream(client, "/completions", completion_body()) for _ in range(runs + 1)]
    return median([timing.decode_rate() for timing in timings[1:]])


def completion_body(offset: int = 0) -> dict:
    prompt = COUNTING.replace("1, 2,", f"{1 + offset}, {2 + offset},")
    return {"model": "x", "prompt": prompt, "max_tokens": DECODE_TOKENS, "temperature": 0}


# ---- 2. concurrent streams ------------------------------------------------------------------


@dataclass
class Concurrency:
    complete: int
    total: int
    aggregate_rate: float
    single_rate: float


def concurrent_streams(server: Server, count: int = 4) -> Concurrency:
    with httpx.Client(base_url=server.api_url, timeout=600) as client:
        single = stream(client, "/completions", completion_body())
        results: list[Timing | None] = [None] * count

        def run(index: int) -> None:
            try:
                results[index] = stream(client, "/completions", completion_body(index * 20))
            except httpx.HTTPError as error:
                logger.info("%s: stream %d failed: %s", server.name, index, error)

        workers = [threading.Thread(target=run, args=(index,)) for index in range(count)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    done = [timing for timing in results if timing is not None and timing.chunks >= DECODE_TOKENS - 1]
    finished = [timing for timing in results if timing is not None and timing.last is not None]
    tokens = sum(timing.chunks for timing in finished)
    wall = max(t.last for t in finished) - min(t.sent for t in finished)  # type: ignore[type-var,operator]
    single_rate = single.chunks / (single.last - single.sent)  # type: ignore[operator]
    return Concurrency(len(done), count, tokens / wall, single_rate)


# ---- 3 and 4. prompt cache ------------------------------------------------------------------


def alternating_conversations(server: Server, systems: tuple[str, str], turns: int = 4) -> tuple[float, float]:
    """Two conversations alternating turns; returns (cold TTFT, median warm TTFT)."""
    histories = [[{"role": "system", "content": system}] for system in systems]
    cold: list[float] = []
    warm: list[float] = []
    with httpx.Client(base_url=server.api_url, timeout=600) as client:
        for turn in range(turns):
            for index, history in enumerate(histories):
                history.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
                body = {"model": "x", "messages": history, "max_tokens": 8, "temperature": 0, "user": f"conversation-{index}"}
                timing, answer = stream_with_text(client, body)
                history.append({"role": "assistant", "content": answer})
                # A turn is cold when its system prompt has never been seen before.
                seen_before = turn > 0 or (index == 1 and systems[0] == systems[1])
                (warm if seen_before else cold).append(timing.ttft)
    return median(cold), median(warm)


def stream_with_text(client: httpx.Client, body: dict) -> tuple[Timing, str]:
    import json

    sent, first, last, chunks, parts = time.perf_counter(), None, None, 0, []
    with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    first, last, chunks = first or now, now, chunks + 1
                    parts.append(content)
    if first is None:  # an empty answer: time to the end of the stream
        first = last = time.perf_counter()
    return Timing(sent, first, last, chunks, None), "".join(parts)


# ---- report ---------------------------------------------------------------------------------


def measure_server(server: Server, runs: int, seed: int) -> dict[str, object]:
    results: dict[str, object] = {"decode_rate": http_decode_rate(server, runs)}
    results["concurrency"] = concurrent_streams(server)
    shared = house_prompt(seed)
    results["shared"] = alternating_conversations(server, (shared, shared))
    results["different"] = alternating_conversations(server, (house_prompt(seed + 1), house_prompt(seed + 2)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per decode-rate figure (median)")
    parser.add_argument("--no-peer", action="store_true", help="skip llama-cpp-python's server")
    arguments = parser.parse_args()
    setup_logging()

    from service.model_files import packaged_model_path
    from service.settings import Settings

    model = str(packaged_model_path(Settings().cache_dir))
    bare = bare_decode_rate(model, arguments.runs)
    with jarvis_server(JARVIS_CONTEXT_SIZE=str(CONTEXT), JARVIS_PARALLEL="4", JARVIS_N_THREADS=str(THREADS)) as server:
        ours = measure_server(server, arguments.runs, seed=1)
    peer = None
    if not arguments.no_peer:
        with llama_cpp_python_server(model, CONTEXT, THREADS) as server:
            peer = measure_server(server, arguments.runs, seed=100)

    print(f"\nllama.cpp engine, packaged gemma-3-270m Q4_K_M, {THREADS} threads")
    print(f"single-stream decode rate (tok/s): bare llama-cpp-python {bare:.1f}, ours over HTTP {ours['decode_rate']:.1f}"
          + (f", llama-cpp-python server {peer['decode_rate']:.1f}" if peer else ""))
    print(ratio_line("1. ours over HTTP / bare in-process", ours["decode_rate"], bare, ">= 0.95"))  # type: ignore[arg-type]
    for name, results in (("ours", ours), ("llama-cpp-python server", peer)):
        if results is None:
            continue
        concurrency: Concurrency = results["concurrency"]  # type: ignore[assignment]
        print(f"2. {name}: {concurrency.complete} of {concurrency.total} streams of {DECODE_TOKENS} tokens complete; "
              f"aggregate {concurrency.aggregate_rate:.1f} tok/s vs one stream {concurrency.single_rate:.1f}: "
              f"{concurrency.aggregate_rate / concurrency.single_rate:.3f} (target >= 1.35)")
        for number, key, target in ((3, "shared", "<= 0.02"), (4, "different", "<= 0.1")):
            cold, warm = results[key]  # type: ignore[misc]
            label = "shared system prompt" if key == "shared" else "different system prompts"
            print(f"{number}. {name}, {label}: cold TTFT {cold:.3f} s, median warm {warm:.3f} s: "
                  f"{warm / cold:.3f} (target {target})")


if __name__ == "__main__":
    main()
