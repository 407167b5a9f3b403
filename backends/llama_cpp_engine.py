"""llama.cpp engine on llama-cpp-python's `Llama`: one sequence at a time, run on a worker
thread so the event loop keeps serving while it generates."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from backends.base import (
    Delta,
    EngineCapabilities,
    EngineConfig,
    EngineError,
    EngineInfo,
    GenerationRequest,
)
from backends.llama_cpp_embedder import LlamaCppEmbedder

logger = logging.getLogger(__name__)

_DONE = object()


class LlamaCppEngine:
    name = "llama_cpp"

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._llama: Any = None
        self._info: EngineInfo | None = None
        self._embedder: LlamaCppEmbedder | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        path = Path(self._config.model)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist; set JARVIS_MODEL_NAME to a GGUF file")
        self._llama = await asyncio.to_thread(self._load, path)
        self._embedder = LlamaCppEmbedder(
            str(path), self._config.context_size, self._config.n_threads, self._config.n_gpu_layers
        )
        metadata: dict[str, str] = self._llama.metadata
        self._info = EngineInfo(
            model_id=path.name.removesuffix(".gguf"),
            context_length=self._llama.n_ctx(),
            architecture=metadata.get("general.architecture", "unknown"),
            capabilities=EngineCapabilities(grammar=True, embeddings=True),
            chat_template=metadata.get("tokenizer.chat_template"),
            bos_token=self._piece(self._llama.token_bos()),
            eos_token=self._piece(self._llama.token_eos()),
        )

    def _load(self, path: Path) -> Any:
        import llama_cpp

        try:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self._config.context_size,
                n_threads=self._config.n_threads or os.cpu_count(),
                n_gpu_layers=self._config.n_gpu_layers,
                verbose=logger.isEnabledFor(logging.DEBUG),
            )
        except ValueError as error:
            raise EngineError(f"llama.cpp could not load {path}: {error}; is it a GGUF model file?") from error

    def _piece(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._embedder.embed(texts)

    async def close(self) -> None:
        async with self._lock:
            if self._embedder is not None:
                self._embedder.close()
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError("the engine is not started")
        return self._info

    def tokenize(self, text: str) -> list[int]:
        import llama_cpp

        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._llama._model.vocab))
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            cancelled = threading.Event()
            worker = loop.run_in_executor(None, self._run, request, queue, loop, cancelled)
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise EngineError(str(item)) from item
                    yield item  # type: ignore[misc]
            finally:
                cancelled.set()
                await asyncio.shield(worker)

    def _run(
        self,
        request: GenerationRequest,
        queue: asyncio.Queue[object],
        loop: asyncio.AbstractEventLoop,
        cancelled: threading.Event,
    ) -> None:
        import llama_cpp

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            sampling = request.sampling
            self._llama.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
            greedy = sampling.temperature == 0
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._llama._model.vocab
            grammar = None
            if sampling.json_schema is not None:
                grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(sampling.json_schema), verbose=False)
            generated = 0
            for token in self._llama.generate(
                request.prompt_token_ids,
                temp=sampling.temperature,
                top_k=1 if greedy else sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                repeat_penalty=sampling.repeat_penalty,
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
                grammar=grammar,
            ):
                if cancelled.is_set():
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    put(Delta(decoder.decode(b"", final=True), generated, "stop", len(request.prompt_token_ids)))
                    break
                generated += 1
                text = decoder.decode(self._llama.detokenize([token]))
                if generated >= sampling.max_tokens:
                    put(Delta(text + decoder.decode(b"", final=True), generated, "length", len(request.prompt_token_ids)))
                    break
                put(Delta(text, generated))
        except Exception as error:  # reported to the consumer, which raises it as EngineError
            put(error)
        finally:
            put(_DONE)
