"""Fast tier: the llama.cpp engine's 429 message counts what runs and what waits correctly, also
in a burst, when requests arrive faster than the decode thread admits them into free slots."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from backends.base import EngineConfig, EngineOverloadedError, GenerationRequest, SamplingParams
from backends.llama_cpp_engine import LlamaCppEngine


async def test_full_queue_message_counts_running_and_waiting_requests() -> None:
    engine = LlamaCppEngine(EngineConfig(model="unused.gguf", context_size=256, cache_dir=".", parallel=4, options={"max_queue": 16}))
    # Started on paper only: no decode thread admits anything, so every request stays where a
    # burst leaves it, in the queue in front of the free slots.
    engine._thread = threading.Thread(target=lambda: None)
    request = GenerationRequest("r", [1, 2, 3], SamplingParams(max_tokens=1))
    streams = [engine.generate(request) for _ in range(4 + 16)]
    waiting = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await asyncio.sleep(0)  # each one reaches the queue
    with pytest.raises(EngineOverloadedError) as raised:
        await anext(engine.generate(request))
    assert str(raised.value) == (
        "4 requests are running (JARVIS_PARALLEL=4) and 16 are waiting, the most the queue holds "
        "(JARVIS_MAX_QUEUE=16); retry shortly"
    )
    for future in waiting:
        future.cancel()
    for future in waiting:
        with contextlib.suppress(asyncio.CancelledError):
            await future
    assert engine.stats()["queue_length"] == 0
