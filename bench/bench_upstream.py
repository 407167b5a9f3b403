"""Benchmark of a remote model: decode rate and time to first token through this server in front
of an upstream (a remote model, engine kind openai), against the same upstream asked directly, in
one invocation, turn about. The upstream is this server on the packaged model (llama.cpp); the
front has the remote model only, so it runs no model of its own.

Run: .venv/bin/python -m bench.bench_upstream [--runs 15] [--tokens 64]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import httpx

from bench.harness import Timing, jarvis_server, median, setup_logging, stream
from service.model_files import packaged_model_path
from service.paths import default_cache_dir

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
    parser.add_argument("--runs", type=int, default=15, help="pairs of requests (one each way) per kind")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--tokenizer", action="store_true", help="the front tokenizes from the GGUF file (option tokenizer)")
    args = parser.parse_args()
    setup_logging()
    upstream_settings = {"JARVIS_CONTEXT_SIZE": "2048", "JARVIS_PARALLEL": "2", "JARVIS_PROMPT_CACHE_DISK_MB": "0", "JARVIS_MODEL_ALIAS": "jarvis"}
    with jarvis_server("upstream", **upstream_settings) as upstream, tempfile.TemporaryDirectory() as folder:
        registry = Path(folder) / "models.yaml"
        tokenizer = f", tokenizer: '{packaged_model_path(default_cache_dir())}'" if args.tokenizer else ""
        registry.write_text(f"models:\n  - {{alias: remote, engine: openai, model: jarvis, options: {{base_url: '{upstream.api_url}'{tokenizer}}}}}\n")
        with jarvis_server("front", JARVIS_MODELS_FILE=str(registry)) as front:
            direct = httpx.Client(base_url=upstream.base_url, timeout=120)
            proxied = httpx.Client(base_url=front.base_url, timeout=120)
            results: dict[tuple[str, str], list[Timing]] = {}
            for kind in ("completions", "chat"):
                measure(direct, "jarvis", kind, 1000, 4)  # warm both paths (connections, templates)
                measure(proxied, "remote", kind, 1001, 4)
            # Pairs of requests, one each way, the order alternating: a load that comes and goes on a
            # shared machine weighs on both sides of a pair alike.
            for run in range(args.runs):
                for kind in ("completions", "chat"):
                    sides = [("direct", direct, "jarvis"), ("proxied", proxied, "remote")]
                    for side, client, model in sides if run % 2 == 0 else sides[::-1]:
                        timing = measure(client, model, kind, run * 2 + (side == "proxied"), args.tokens)
                        results.setdefault((kind, side), []).append(timing)
            report(results, args)


def report(results: dict[tuple[str, str], list[Timing]], args: argparse.Namespace) -> None:
    where = "the front tokenizes from the GGUF file" if args.tokenizer else "the upstream tokenizes"
    logger.info("\n%d pairs of requests of %d tokens, one each way, turn about (%s); medians", args.runs, args.tokens, where)
    logger.info("%-12s %-8s %12s %10s %14s", "request", "side", "decode tok/s", "TTFT ms", "whole answer s")
    for (kind, side), timings in results.items():
        rate = median([timing.decode_rate() for timing in timings])
        ttft = median([timing.ttft for timing in timings])
        logger.info("%-12s %-8s %12.1f %10.1f %14.3f", kind, side, rate, ttft * 1000, median([_whole(timing) for timing in timings]))
    logger.info("\nratios: the median over the pairs of (through the front) / (direct) for rates, (direct) / (through the front) for times")
    for kind in ("completions", "chat"):
        pairs = list(zip(results[(kind, "direct")], results[(kind, "proxied")]))
        decode = median([proxied.decode_rate() / direct.decode_rate() for direct, proxied in pairs])
        ttft = median([direct.ttft / proxied.ttft for direct, proxied in pairs])
        whole = median([_whole(direct) / _whole(proxied) for direct, proxied in pairs])
        added = median([proxied.ttft - direct.ttft for direct, proxied in pairs])
        logger.info("%-62s %6.3f   (target >= 0.97)", f"{kind}: decode rate", decode)
        logger.info("%-62s %6.3f   (target >= 0.97)", f"{kind}: time to first token", ttft)
        logger.info("%-62s %6.3f   (target >= 0.97)", f"{kind}: whole answer", whole)
        logger.info("%-62s %6.1f ms", f"{kind}: time to first token added by the front", added * 1000)


def _whole(timing: Timing) -> float:
    """Seconds from sending the request to the last token: what the client waits in all."""
    assert timing.last is not None
    return timing.last - timing.sent


if __name__ == "__main__":
    main()
