"""Embeddings with llama.cpp: a second, embedding-only context on the same GGUF, created on the
first request so a chat-only server never pays for it."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

logger = logging.getLogger(__name__)


class LlamaCppEmbedder:
    def __init__(self, model_path: str, context_size: int, n_threads: int | None, n_gpu_layers: int) -> None:
        self._model_path = model_path
        self._context_size = context_size
        self._n_threads = n_threads or os.cpu_count()
        self._n_gpu_layers = n_gpu_layers
        self._llama: Any = None
        self._lock = threading.Lock()  # one embedding batch at a time on this context

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._llama is None:
                import llama_cpp

                logger.info("creating the embedding context for %s", self._model_path)
                self._llama = llama_cpp.Llama(
                    model_path=self._model_path,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=self._context_size,
                    n_batch=self._context_size,
                    n_ubatch=self._context_size,
                    n_threads=self._n_threads,
                    n_gpu_layers=self._n_gpu_layers,
                    verbose=False,
                )
            return [list(vector) for vector in self._llama.embed(texts, normalize=True)]

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
