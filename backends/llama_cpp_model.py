"""Loading a GGUF model into llama.cpp for the engine: the model, one context whose unified KV
cache holds every slot's sequence, a batch, and what the model says about itself (its info,
special tokens, end-of-generation tokens, token pieces)."""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.base import EngineCapabilities, EngineConfig, EngineError, EngineInfo

logger = logging.getLogger(__name__)

BATCH_TOKENS = 512  # tokens per llama_decode call: decode steps first, prefill fills the rest


@dataclass(eq=False)
class LoadedModel:
    model: Any  # _internals.LlamaModel
    context: Any  # _internals.LlamaContext
    batch: Any  # _internals.LlamaBatch
    vocab: Any
    add_bos: bool
    _buffer: ctypes.Array = field(default_factory=lambda: ctypes.create_string_buffer(64))

    @property
    def n_vocab(self) -> int:
        return int(self.model.n_vocab())

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (special tokens written out only with `special`)."""
        import llama_cpp

        length = llama_cpp.llama_token_to_piece(self.vocab, token, self._buffer, len(self._buffer), 0, special)
        if length < 0:  # the piece is longer than the buffer: grow it once and retry
            self._buffer = ctypes.create_string_buffer(-length)
            return self.piece(token, special)
        return self._buffer.raw[:length]

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def end_tokens(self) -> tuple[int, ...]:
        return tuple(token for token in range(self.n_vocab) if self.is_end(token))

    def control_tokens(self) -> frozenset[str]:
        import llama_cpp

        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        texts = (
            self.piece(token, special=True).decode("utf-8", "replace")
            for token in range(self.n_vocab)
            if llama_cpp.llama_vocab_get_attr(self.vocab, token) & control
        )
        return frozenset(text for text in texts if text)

    def info(self, path: Path, context_size: int) -> EngineInfo:
        metadata = self.model.metadata()
        return EngineInfo(
            model_id=path.name.removesuffix(".gguf"),
            context_length=context_size,
            architecture=metadata.get("general.architecture", "unknown"),
            capabilities=EngineCapabilities(grammar=True, embeddings=True, batching=True),
            chat_template=metadata.get("tokenizer.chat_template"),
            bos_token=self.piece(self.model.token_bos(), special=True).decode("utf-8", "replace"),
            eos_token=self.piece(self.model.token_eos(), special=True).decode("utf-8", "replace"),
            special_tokens=self.control_tokens(),
            vocab_size=self.n_vocab,
        )

    def warm_up(self) -> None:
        """Decode one token and forget it: llama.cpp builds its compute graph and starts its threads
        on the first decode, which would otherwise add to the first request's time to first token."""
        import llama_cpp

        batch = self.batch.batch
        batch.n_tokens = 1
        batch.token[0] = self.model.token_bos()
        batch.pos[0] = 0
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        llama_cpp.llama_decode(self.context.ctx, batch)
        llama_cpp.llama_memory_seq_rm(self.context.memory, 0, 0, -1)

    def close(self) -> None:
        for resource in (self.batch, self.context, self.model):
            if resource is not None:
                resource.close()
        self.batch = self.context = self.model = None


def load(path: Path, config: EngineConfig, parallel: int) -> LoadedModel:
    import llama_cpp
    from llama_cpp import _internals

    _quiet_llama_logs(llama_cpp)
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = config.n_gpu_layers
    try:
        model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
    except ValueError as error:
        raise EngineError(f"llama.cpp could not load {path}: {error}; is it a GGUF model file?") from error
    threads = config.n_threads or os.cpu_count() or 1
    params = llama_cpp.llama_context_default_params()
    # One unified KV cache shared by all sequences: copying a prefix between them is cheap,
    # and each request may use the whole per-request context.
    params.n_ctx = config.context_size * parallel
    params.n_batch = BATCH_TOKENS
    params.n_ubatch = BATCH_TOKENS
    params.n_seq_max = parallel
    params.kv_unified = True
    params.swa_full = True  # sliding-window models (gemma 3) keep whole prefixes reusable
    params.n_threads = threads
    params.n_threads_batch = threads
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=BATCH_TOKENS, embd=0, n_seq_max=1, verbose=False)
    logger.info("llama.cpp: %s, %d slots x %d tokens, %d threads", path.name, parallel, config.context_size, threads)
    return LoadedModel(model, context, batch, model.vocab, bool(llama_cpp.llama_vocab_get_add_bos(model.vocab)))


# The settings a saved prompt cache depends on, besides the model file (see llama_cpp_prefix_store).
def cache_settings(config: EngineConfig) -> dict[str, object]:
    return {"n_ctx_seq": config.context_size, "kv_unified": True, "swa_full": True, "n_gpu_layers": config.n_gpu_layers}


_LOG_CALLBACK: Any = None


def _quiet_llama_logs(llama_cpp: Any) -> None:
    """Route llama.cpp's own logging through `logging` at DEBUG instead of stderr."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    native = logging.getLogger("llama_cpp.native")

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _: ctypes.c_void_p) -> None:
        if native.isEnabledFor(logging.DEBUG):
            native.debug("%s", text.decode("utf-8", "replace").rstrip())

    _LOG_CALLBACK = forward  # keep a reference: llama.cpp calls it for the life of the process
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
