"""Memory under load: the server process's RSS over 1,000 small requests after a warm-up, on the
llama.cpp engine and the packaged model.

    python -m bench.bench_soak [--requests 1000] [--warmup 100] [--workers 4]

Requests mix whole and streamed chat, tools with a forced call, a JSON schema, completions and
embeddings, from several threads at once. The RSS (from /admin/status) is sampled every 100
requests; the figure that matters is the growth from the end of the warm-up to the end (target
under 20 MB): a leak or a cache without bounds shows as steady growth."""

from __future__ import annotations

import argparse
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import jarvis_server, setup_logging

logger = logging.getLogger("bench")

ADMIN_KEY = "soak-admin-key"
TOOLS = [{"type": "function", "function": {"name": "HassTurnOn", "parameters": {"type": "object", "properties": {"area": {"type": "string"}}}}}]


def requests_mix() -> itertools.cycle:
    chat = {"model": "x", "max_tokens": 4, "messages": [{"role": "user", "content": "Say something short"}]}
    schema = {"type": "object", "properties": {"room": {"type": "string"}}, "required": ["room"]}
    return itertools.cycle([
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", {**chat, "stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/chat/completions", {**chat, "tools": TOOLS, "tool_choice": "required", "max_tokens": 16}),
        ("/v1/chat/completions", {**chat, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}, "max_tokens": 12}),
        ("/v1/chat/completions", {**chat, "user": "someone", "messages": [{"role": "user", "content": "Another question"}]}),
        ("/v1/completions", {"model": "x", "prompt": "The capital of France is", "max_tokens": 4}),
        ("/v1/embeddings", {"model": "x", "input": ["kitchen light", "living room"]}),
        ("/v1/chat/completions", {**chat, "temperature": "hot"}),  # a 400, on purpose
    ])


def rss(client: httpx.Client) -> int:
    status = client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    return int(status["process_rss_bytes"])


def send(client: httpx.Client, path: str, body: dict) -> int:
    if body.get("stream"):
        with client.stream("POST", path, json=body) as response:
            for _ in response.iter_lines():
                pass
            return response.status_code
    return client.post(path, json=body).status_code


def run(client: httpx.Client, count: int, workers: int, mix: itertools.cycle) -> list[int]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda item: send(client, *item), [next(mix) for _ in range(count)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    setup_logging()
    mix = requests_mix()
    with jarvis_server(JARVIS_ADMIN_KEY=ADMIN_KEY, JARVIS_CONTEXT_SIZE="2048") as server, httpx.Client(base_url=server.base_url, timeout=120) as client:
        started = rss(client)
        run(client, args.warmup, args.workers, mix)
        warm = rss(client)
        logger.info("RSS: %.1f MB at start, %.1f MB after %d warm-up requests", started / 2**20, warm / 2**20, args.warmup)
        statuses: list[int] = []
        for done in range(0, args.requests, 100):
            statuses += run(client, min(100, args.requests - done), args.workers, mix)
            logger.info("after %4d requests: RSS %.1f MB (%+.1f MB)", done + 100, rss(client) / 2**20, (rss(client) - warm) / 2**20)
        final = rss(client)
    unexpected = [status for status in statuses if status not in (200, 400)]
    logger.info("statuses: %d ok, %d refused on purpose, %d other", statuses.count(200), statuses.count(400), len(unexpected))
    logger.info("RSS growth over %d requests after warm-up: %.1f MB (target under 20 MB)", args.requests, (final - warm) / 2**20)


if __name__ == "__main__":
    main()
