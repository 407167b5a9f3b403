"""Benchmark of a remote model: decode rate and time to first token through this server in front
of an upstream (a remote model, engine kind openai), against the same upstream asked directly, in
one invocation, turn about. The upstream is this server on the packaged model (llama.cpp); the
front has the remote model only, so it runs no model of its own.

Run: .venv/bin/python -m bench.bench_upstream [--runs 7] [--tokens 128]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import httpx

from bench.harness import Timing, jarvis_server, median, ratio_line, setup_logging, stream

logger = logging.getLogger("bench")

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa"]


def prompt(run: int) -> str:
    """A different prompt each request (the same for both sides of a turn), so that neither side
    meets a prefix the other one cached."""
    return f"Request {run}: {' '.join(WORDS[run % 16 :] + WORDS[: run % 16])}. Counting: 1, 2, 3, 4, 5, 6, 7,"


def measure(client: httpx.Client, model: str, kind: str, run: int, tokens: int) -> Timing:
    text = prompt(run)
    if kind == "chat":
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": tokens, "temperature": 0}
        return stream(client, "/v1/chat/completions", body)
    return stream(client, "/v1/completions", {"model": model, "prompt": text, "max_tokens": tokens, "temperature": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="requests per side and kind (medians are compared)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per answer")
    args = parser.parse_args()
    setup_logging()
    upstream_settings = {"JARVIS_CONTEXT_SIZE": "2048", "JARVIS_PARALLEL": "2", "JARVIS_PROMPT_CACHE_DISK_MB": "0", "JARVIS_MODEL_ALIAS": "jarvis"}
    with jarvis_server("upstream", **upstream_settings) as upstream, tempfile.TemporaryDirectory() as folder:
        registry = Path(folder) / "models.yaml"
        registry.write_text(f"models:\n  - {{alias: remote, engine: openai, model: jarvis, options: {{base_url: '{upstream.api_url}'}}}}\n")
        with jarvis_server("front", JARVIS_MODELS_FILE=str(registry)) as front:
            direct = httpx.Client(base_url=upstream.base_url, timeout=120)
            proxied = httpx.Client(base_url=front.base_url, timeout=120)
            results: dict[tuple[str, str], list[Timing]] = {}
            for kind in ("completions", "chat"):
                measure(direct, "jarvis", kind, 1000, 4)  # warm both paths (connections, templates)
                measure(proxied, "remote", kind, 1001, 4)
                for run in range(args.runs):
                    for side, client, model in (("direct", direct, "jarvis"), ("proxied", proxied, "remote")):
                        timing = measure(client, model, kind, run * 2 + (side == "proxied"), args.tokens)
                        results.setdefault((kind, side), []).append(timing)
            report(results, args)


def report(results: dict[tuple[str, str], list[Timing]], args: argparse.Namespace) -> None:
    logger.info("\n%d runs of %d tokens per side, turn about; medians", args.runs, args.tokens)
    logger.info("%-12s %-8s %12s %10s", "request", "side", "decode tok/s", "TTFT ms")
    for (kind, side), timings in results.items():
        rate = median([timing.decode_rate() for timing in timings])
        ttft = median([timing.ttft for timing in timings])
        logger.info("%-12s %-8s %12.1f %10.1f", kind, side, rate, ttft * 1000)
    logger.info("")
    for kind in ("completions", "chat"):
        direct, proxied = results[(kind, "direct")], results[(kind, "proxied")]
        rate_direct = median([timing.decode_rate() for timing in direct])
        rate_proxied = median([timing.decode_rate() for timing in proxied])
        ttft_direct = median([timing.ttft for timing in direct])
        ttft_proxied = median([timing.ttft for timing in proxied])
        logger.info(ratio_line(f"{kind}: decode rate through the front / direct", rate_proxied, rate_direct, ">= 0.97"))
        logger.info(ratio_line(f"{kind}: TTFT direct / through the front", ttft_direct, ttft_proxied, ">= 0.97"))
        logger.info("%-62s %6.1f ms", f"{kind}: TTFT added by the front", (ttft_proxied - ttft_direct) * 1000)


if __name__ == "__main__":
    main()
