"""Embeddings on the vLLM engine: vLLM's pooling runner over the same model, in a second AsyncLLM.
vLLM serves one runner per engine (generate or pooling), so embeddings need their own; it is
started on the first embeddings request, not at load, so generation-only users never pay for it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

from backends.base import EngineError

logger = logging.getLogger(__name__)

# KV cache of the pooling engine: prompts are encoded once and dropped, so a little is enough.
POOLING_KV_CACHE_BYTES = 256 * 2**20


class VllmEmbedder:
    def __init__(self, make_args: Callable[..., Any]) -> None:
        """`make_args(**overrides)` builds vLLM engine arguments for the same model."""
        self._make_args = make_args
        self._llm: Any = None
        self._starting = asyncio.Lock()
        self._ids = itertools.count()

    async def embed(self, token_lists: list[list[int]]) -> list[list[float]]:
        llm = await self._started()
        return list(await asyncio.gather(*(self._one(llm, ids) for ids in token_lists)))

    async def _started(self) -> Any:
        async with self._starting:
            if self._llm is None:
                from vllm.v1.engine.async_llm import AsyncLLM

                logger.info("starting vLLM's pooling runner for embeddings (first embeddings request)")
                args = self._make_args(runner="pooling", convert="embed", enforce_eager=True, kv_cache_memory_bytes=POOLING_KV_CACHE_BYTES)
                try:
                    self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
                except Exception as error:
                    raise EngineError(f"vLLM could not start its pooling runner for embeddings: {type(error).__name__}: {error}") from error
            return self._llm

    async def _one(self, llm: Any, ids: list[int]) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        final = None
        async for output in llm.encode(TokensPrompt(prompt_token_ids=ids), PoolingParams(task="embed"), f"embed-{next(self._ids)}"):
            final = output
        if final is None:
            raise EngineError("vLLM returned no embedding")
        vector = [float(value) for value in final.outputs.data.tolist()]
        norm = math.sqrt(math.fsum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    async def close(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)
