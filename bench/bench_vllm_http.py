"""Benchmark of the vLLM engine: decode rate through our HTTP API vs vLLM's AsyncLLM driven
directly in this process, single stream and 4 concurrent, in one invocation; and the engine's
start-up time against a start with vLLM's own compile-cache default. Packaged gemma-3-270m,
converted once from GGUF (vLLM on CPU here).

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


class DirectAsyncLLM:
    """vLLM's AsyncLLM in this process, with the engine arguments our engine uses on this CPU."""

    def __init__(self, folder: str) -> None:
        from backends.vllm_environment import prepare_vllm_environment

        prepare_vllm_environment()  # the same compile path as our server, so the same kernels
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=folder, tokenizer=folder, max_model_len=MAX_MODEL_LEN, kv_cache_memory_bytes=2**30,
            enable_prefix_caching=True, disable_log_stats=True,
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._llm.get_tokenizer()
        self._prompt_type = TokensPrompt
        self._params = SamplingParams(max_tokens=TOKENS, temperature=0, output_kind=RequestOutputKind.DELTA)
        self._counter = 0

    async def one(self, offset: int) -> Timing:
        self._counter += 1
        ids = self._tokenizer.encode(prompt(offset), add_special_tokens=True)
        sent, first, last, chunks = time.perf_counter(), None, None, 0
        request = self._prompt_type(prompt_token_ids=ids)
        async for output in self._llm.generate(request, self._params, f"bench-{self._counter}"):
            if output.outputs[0].token_ids:
                now = time.perf_counter()
                first, last = first or now, now
                chunks += len(output.outputs[0].token_ids)
        return Timing(sent, first, last, chunks, "length")

    async def batch(self) -> list[Timing]:
        return list(await asyncio.gather(*(self.one(index * 20) for index in range(CONCURRENT))))

    def shutdown(self) -> None:
        self._llm.shutdown()


# ---- through our HTTP API --------------------------------------------------------------------


class OverHttp:
    def __init__(self, server: Server) -> None:
        self._client = httpx.Client(base_url=server.api_url, timeout=600)
        self._body = {"model": "x", "max_tokens": TOKENS, "temperature": 0}

    def one(self, offset: int) -> Timing:
        return stream(self._client, "/completions", {**self._body, "prompt": prompt(offset)})

    def batch(self) -> list[Timing]:
        timings: list[Timing] = [None] * CONCURRENT  # type: ignore[list-item]

        def run(index: int) -> None:
            timings[index] = self.one(index * 20)

        workers = [threading.Thread(target=run, args=(index,)) for index in range(CONCURRENT)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return timings

    def close(self) -> None:
        self._client.close()


def aggregate(timings: list[Timing]) -> float:
    wall = max(t.last for t in timings) - min(t.sent for t in timings)  # type: ignore[type-var,operator]
    return sum(t.chunks for t in timings) / wall


Rates = dict[str, list[float]]


async def interleaved_rates(server: Server, folder: str, runs: int) -> tuple[Rates, Rates]:
    """Single-stream decode rates and 4-concurrent aggregates of both, measured turn about so that
    a change in the machine's load during the run falls on both alike."""
    http = OverHttp(server)
    direct = DirectAsyncLLM(folder)
    singles: Rates = {"http": [], "direct": []}
    batches: Rates = {"http": [], "direct": []}
    try:
        await asyncio.to_thread(http.one, 0)  # warm-up, not counted
        await direct.one(0)
        for _ in range(runs):
            singles["http"].append((await asyncio.to_thread(http.one, 0)).decode_rate())
            singles["direct"].append((await direct.one(0)).decode_rate())
        for _ in range(runs):
            batches["http"].append(aggregate(await asyncio.to_thread(http.batch)))
            batches["direct"].append(aggregate(await direct.batch()))
    finally:
        http.close()
        direct.shutdown()
    return singles, batches


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
        start_seconds = server.start_seconds
        singles, batches = asyncio.run(interleaved_rates(server, str(folder), arguments.runs))
    # Baseline for start-up: vLLM's own compile-cache default (AOT), which our engine overrides on CPU.
    with jarvis_server(
        "jarvis, vLLM's compile default",
        JARVIS_INFERENCE_ENGINE="vllm", JARVIS_VLLM_MAX_MODEL_LEN=str(MAX_MODEL_LEN), JARVIS_CONTEXT_SIZE=str(MAX_MODEL_LEN),
        VLLM_USE_AOT_COMPILE="1",
    ) as server:
        default_start_seconds = server.start_seconds
    http_single, direct_single = median(singles["http"]), median(singles["direct"])
    http_batch, direct_batch = median(batches["http"]), median(batches["direct"])
    logger.info("per run, single stream: %s; %d concurrent: %s", singles, CONCURRENT, batches)

    print("\nvLLM engine (CPU build), packaged gemma-3-270m converted from GGUF")
    print(f"start-up to /health 200: {start_seconds:.0f} s (GGUF conversion, cached: {conversion:.1f} s this run)")
    print(f"start-up with vLLM's compile-cache default (AOT): {default_start_seconds:.0f} s")
    print(ratio_line("start-up, ours / vLLM's compile default", start_seconds, default_start_seconds, "< 1"))
    print(f"single stream (tok/s): AsyncLLM direct {direct_single:.1f}, ours over HTTP {http_single:.1f}")
    print(f"{CONCURRENT} concurrent aggregate (tok/s): AsyncLLM direct {direct_batch:.1f}, ours over HTTP {http_batch:.1f}")
    print(ratio_line("ours over HTTP / AsyncLLM direct, single stream", http_single, direct_single, ">= 0.95"))
    print(ratio_line(f"ours over HTTP / AsyncLLM direct, {CONCURRENT} concurrent", http_batch, direct_batch, ">= 0.95"))


if __name__ == "__main__":
    main()
