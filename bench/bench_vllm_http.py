"""Benchmark of the vLLM engine: decode rate through our HTTP API vs vLLM's AsyncLLM driven
directly in this process, single stream and 4 concurrent, in one invocation; and the engine's
start-up time. Packaged gemma-3-270m, converted once from GGUF (vLLM on CPU here).

Run: .venv/bin/python -m bench.bench_vllm_http
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from pathlib import Path

import httpx

from bench.harness import Server, Timing, jarvis_server, median, ratio_line, setup_logging, stream

logger = logging.getLogger("bench")

PROMPT = "Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
TOKENS = 128
MAX_MODEL_LEN = 2048
CONCURRENT = 4


def prompt(offset: int) -> str:
    return PROMPT.replace("1, 2,", f"{1 + offset}, {2 + offset},")


# ---- AsyncLLM directly -------------------------------------------------------------------------


async def direct_rates(folder: str, runs: int) -> tuple[float, float]:
    """(single-stream decode rate, 4-concurrent aggregate rate) of AsyncLLM without our layers."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    # The same engine arguments our engine uses on this CPU machine.
    args = AsyncEngineArgs(
        model=folder, tokenizer=folder, max_model_len=MAX_MODEL_LEN, kv_cache_memory_bytes=2**30,
        enable_prefix_caching=True, disable_log_stats=True,
    )
    llm = AsyncLLM.from_engine_args(args)
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(max_tokens=TOKENS, temperature=0, output_kind=RequestOutputKind.DELTA)
    counter = 0

    async def one(offset: int) -> Timing:
        nonlocal counter
        counter += 1
        ids = tokenizer.encode(prompt(offset), add_special_tokens=True)
        sent, first, last, chunks = time.perf_counter(), None, None, 0
        async for output in llm.generate(TokensPrompt(prompt_token_ids=ids), params, f"bench-{counter}"):
            if output.outputs[0].token_ids:
                now = time.perf_counter()
                first, last = first or now, now
                chunks += len(output.outputs[0].token_ids)
        return Timing(sent, first, last, chunks, "length")

    try:
        singles = [await one(0) for _ in range(runs + 1)][1:]
        batch = await asyncio.gather(*(one(index * 20) for index in range(CONCURRENT)))
    finally:
        llm.shutdown()
    return median([t.decode_rate() for t in singles]), aggregate(batch)


def aggregate(timings: list[Timing]) -> float:
    wall = max(t.last for t in timings) - min(t.sent for t in timings)  # type: ignore[type-var,operator]
    return sum(t.chunks for t in timings) / wall


# ---- through our HTTP API --------------------------------------------------------------------


def http_rates(server: Server, runs: int) -> tuple[float, float]:
    body = {"model": "x", "max_tokens": TOKENS, "temperature": 0}
    with httpx.Client(base_url=server.api_url, timeout=600) as client:
        singles = [stream(client, "/completions", {**body, "prompt": prompt(0)}) for _ in range(runs + 1)][1:]
        batch: list[Timing] = [None] * CONCURRENT  # type: ignore[list-item]

        def run(index: int) -> None:
            batch[index] = stream(client, "/completions", {**body, "prompt": prompt(index * 20)})

        workers = [threading.Thread(target=run, args=(index,)) for index in range(CONCURRENT)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return median([t.decode_rate() for t in singles]), aggregate(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    setup_logging()

    from backends.gguf_to_hf import ensure_hf_folder
    from service.model_files import packaged_model_path
    from service.settings import Settings

    settings = Settings()
    started = time.monotonic()
    folder = ensure_hf_folder(packaged_model_path(settings.cache_dir), Path(settings.cache_dir))
    conversion = time.monotonic() - started
    with jarvis_server(
        JARVIS_INFERENCE_ENGINE="vllm", JARVIS_VLLM_MAX_MODEL_LEN=str(MAX_MODEL_LEN), JARVIS_CONTEXT_SIZE=str(MAX_MODEL_LEN)
    ) as server:
        http_single, http_batch = http_rates(server, arguments.runs)
        start_seconds = server.start_seconds
    direct_single, direct_batch = asyncio.run(direct_rates(str(folder), arguments.runs))

    print("\nvLLM engine (CPU build), packaged gemma-3-270m converted from GGUF")
    print(f"start-up to /health 200: {start_seconds:.0f} s (GGUF conversion, cached: {conversion:.1f} s this run)")
    print(f"single stream (tok/s): AsyncLLM direct {direct_single:.1f}, ours over HTTP {http_single:.1f}")
    print(f"{CONCURRENT} concurrent aggregate (tok/s): AsyncLLM direct {direct_batch:.1f}, ours over HTTP {http_batch:.1f}")
    print(ratio_line("ours over HTTP / AsyncLLM direct, single stream", http_single, direct_single, ">= 0.95"))
    print(ratio_line(f"ours over HTTP / AsyncLLM direct, {CONCURRENT} concurrent", http_batch, direct_batch, ">= 0.95"))


if __name__ == "__main__":
    main()
