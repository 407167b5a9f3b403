"""Voice latency on the llama.cpp engine and the packaged model, with a Home Assistant style
household prompt (about 2,400 tokens of devices and areas, and the assist tools):

1. constrained decoding against free decoding on the cached prompt (a forced tool call, a
   json_schema answer), as decode rates and their ratio;
2. the first command after a restart and after a keep-alive unload, TTFT against the warm TTFT of
   the same prompt, and the load time the restore adds;
3. a whole two-round-trip command warm (tool call, then the answer after the tool result): the time
   until the spoken answer can start;
4. a voice request arriving while 4 long background generations fill every slot: its TTFT with and
   without priority, against its TTFT on an idle server.

    python -m bench.bench_voice [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.harness import Server, jarvis_server, median, setup_logging
from service.model_files import packaged_model_path
from service.settings import load_settings

logger = logging.getLogger("bench")

AREAS = ["Kitchen", "Living room", "Bedroom", "Office", "Garage", "Hall", "Bathroom", "Garden", "Attic", "Basement", "Porch", "Nursery"]
KINDS = ["ceiling light", "lamp", "thermostat", "blinds", "speaker", "smart plug", "motion sensor", "door lock", "fan", "TV"]
HOUSEHOLD = (
    "You are a voice assistant for a smart home. Answer questions about the world truthfully. Answer in plain text. "
    "Keep it simple and to the point. When controlling Home Assistant always call the intent tools.\n"
    "Static Context: An overview of the areas and the devices in this smart home:\n"
    + "\n".join(
        f"- names: {area} {kind}\n  domain: {kind.split()[-1].lower()}\n  state: 'off'\n  areas: {area}\n  attributes:\n    friendly_name: {area} {kind}"
        for area in AREAS[:8] for kind in KINDS[:8]
    )
)
# The packaged base model writes strings until their bound: bounds of the size real names have keep
# its calls as short as an instruction-tuned model's would be.
TOOLS = [
    {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {"name": {"type": "string", "maxLength": 32}, "area": {"type": "string", "maxLength": 32}}}}}
    for name, description in (("HassTurnOn", "Turns on/opens a device or entity"), ("HassTurnOff", "Turns off/closes a device or entity"),
                              ("HassLightSet", "Sets the brightness or color of a light"), ("GetLiveContext", "Current state of devices"))
]
SCHEMA = {"type": "object", "properties": {"room": {"type": "string", "maxLength": 40}, "devices": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 8}}, "required": ["room", "devices"]}


def first_turn(text: str = "Turn on the kitchen lamp") -> list[dict]:
    return [{"role": "system", "content": HOUSEHOLD}, {"role": "user", "content": text}]


def timed_stream(client: httpx.Client, body: dict) -> tuple[float, float, int, dict]:
    """TTFT, decode rate after the first piece, pieces, and the last event with usage."""
    sent = time.perf_counter()
    first = last = None
    pieces = 0
    usage: dict = {}
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read().decode()}")
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices", []):
                delta = choice["delta"]
                if delta.get("content") or delta.get("tool_calls"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces += 1
    assert first is not None and last is not None
    rate = (usage.get("completion_tokens", pieces) - 1) / (last - first) if last > first else 0.0
    return first - sent, rate, pieces, usage


def decode_rates(client: httpx.Client, rounds: int) -> None:
    kinds = {
        "free text": {"max_tokens": 48, "temperature": 0},
        "forced tool call": {"max_tokens": 48, "temperature": 0, "tools": TOOLS, "tool_choice": "required"},
        "json_schema": {"max_tokens": 48, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "room", "schema": SCHEMA}}},
    }
    rates: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, fields in kinds.items():
            whole = client.post("/v1/chat/completions", json={"model": "x", "messages": first_turn(), **fields})
            whole.raise_for_status()
            whole = whole.json()
            started = time.perf_counter()
            again = client.post("/v1/chat/completions", json={"model": "x", "messages": first_turn(), **fields}).json()
            elapsed = time.perf_counter() - started
            tokens = again["usage"]["completion_tokens"]
            # The prompt is cached but for its last token: the time is the decode.
            rates[name].append(tokens / elapsed)
    free = median(rates["free text"])
    for name in kinds:
        logger.info("decode on the cached prompt, %-16s %.1f tok/s: %.2f of free text", name + ":", median(rates[name]), median(rates[name]) / free)


def voice_command(client: httpx.Client) -> float:
    """Both round trips of one command; seconds until the spoken answer's first token."""
    started = time.perf_counter()
    call = client.post("/v1/chat/completions", json={"model": "x", "messages": first_turn(), "tools": TOOLS, "tool_choice": "required", "max_tokens": 96, "temperature": 0, "user": "satellite"}).json()
    tool_call = call["choices"][0]["message"]["tool_calls"][0]
    messages = [*first_turn(), {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"success": true}'}]
    answer_sent = time.perf_counter()
    ttft, _, _, _ = timed_stream(client, {"model": "x", "messages": messages, "tools": TOOLS, "max_tokens": 16, "temperature": 0, "user": "satellite"})
    return answer_sent - started + ttft


@contextlib.contextmanager
def household_server(folder: Path, **settings: str) -> Iterator[Server]:
    model = packaged_model_path(load_settings().cache_dir)
    with jarvis_server(JARVIS_CACHE_DIR=str(folder), JARVIS_MODEL_NAME=str(model), JARVIS_CONTEXT_SIZE="4096",
                       JARVIS_PROMPT_CACHE_DISK_MB="512", **settings) as server:
        yield server


def restart_and_unload(folder: Path) -> None:
    body = {"model": "x", "messages": first_turn(), "max_tokens": 4, "temperature": 0}
    with household_server(folder) as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
        cold, _, _, _ = timed_stream(client, body)
        warm = median([timed_stream(client, {**body, "messages": first_turn(f"Turn off the {area.lower()} lamp")})[0] for area in AREAS[:3]])
    with household_server(folder) as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
        restarted, _, _, usage = timed_stream(client, {**body, "messages": first_turn("Is the garage door locked?")})
        restart_load = server.start_seconds
    logger.info("household prompt: %d tokens; cold TTFT %.2f s, warm %.3f s", usage["prompt_tokens"], cold, warm)
    logger.info("first command after a restart: TTFT %.3f s = %.1f x warm (cold was %.0f x warm); server start %.1f s",
                restarted, restarted / warm, cold / warm, restart_load)
    registry = folder / "models.yaml"
    registry.write_text("models:\n  - {alias: house, engine: llama_cpp, context_size: 4096, keep_alive_seconds: 2}\n")
    with household_server(folder, JARVIS_MODELS_FILE=str(registry)) as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
        timed_stream(client, body)
        while client.get("/v1/models").json()["data"][0]["state"] != "unloaded":
            time.sleep(0.2)
        after_unload, _, _, usage = timed_stream(client, {**body, "messages": first_turn("Is the porch light on?")})
    logger.info("first command after a keep-alive unload: TTFT %.3f s (model load and restore included) = %.1f x warm; %d of %d prompt tokens from disk",
                after_unload, after_unload / warm, usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"])


def priority(folder: Path) -> None:
    background = {"model": "x", "max_tokens": 400, "temperature": 0.7, "messages": [{"role": "user", "content": "Write a very long essay about the history of lighthouses."}]}
    voice = {"model": "x", "messages": first_turn(), "max_tokens": 8, "temperature": 0}
    with household_server(folder, JARVIS_PARALLEL="4") as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
        timed_stream(client, voice)  # the household prompt cached
        idle = timed_stream(client, voice)[0]
        results = {}
        for name, level in (("without priority", 0), ("with priority", 10)):
            threads = [threading.Thread(target=lambda: timed_stream(httpx.Client(base_url=server.base_url, timeout=600), background)) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(3)  # every slot busy
            results[name] = timed_stream(client, {**voice, "priority": level})[0]
            for thread in threads:
                thread.join()
    logger.info("voice TTFT with 4 background generations running: %.2f s without priority, %.2f s with; idle %.2f s",
                results["without priority"], results["with priority"], idle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="rates,restart,priority", help="comma-separated: rates, restart, priority")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    setup_logging()
    with tempfile.TemporaryDirectory(prefix="voice-bench-") as folder_name:
        folder = Path(folder_name)
        if "rates" in parts:
            with household_server(folder / "rates") as server, httpx.Client(base_url=server.base_url, timeout=600) as client:
                decode_rates(client, args.rounds)
                voice_command(client)  # the household prompt and the tool turn cached
                totals = [voice_command(client) for _ in range(args.rounds)]
                logger.info("two-round-trip voice command, warm: %.2f s until the answer starts (median of %d)", median(totals), args.rounds)
        if "restart" in parts:
            restart_and_unload(folder / "restart")
        if "priority" in parts:
            priority(folder / "priority")


if __name__ == "__main__":
    main()
