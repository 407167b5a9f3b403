"""A remote model's tokenizer read here from its GGUF file (the `tokenizer` option): llama.cpp
loads the vocabulary only, not the weights, and tokenizes exactly as a llama.cpp upstream on that
file does, without the round trip to the upstream's /tokenize for every request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.base import EngineError


class LocalTokenizer:
    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise EngineError(f"options.tokenizer: {path} is not a file; give the GGUF file the upstream runs, or leave it empty")
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model: Any = _internals.LlamaModel(path_model=path, params=params, verbose=False)
        except ValueError as error:
            raise EngineError(f"options.tokenizer: llama.cpp cannot read {path}: {error}") from error
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._model.vocab))
        self.path = path

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        if not text:
            return [self._model.token_bos()] if add_bos and self._add_bos else []
        return self._model.tokenize(text.encode("utf-8"), add_bos=add_bos and self._add_bos, special=special)

    def detokenize(self, token_ids: list[int]) -> str:
        return self._model.detokenize(token_ids, special=False).decode("utf-8", "replace")

    def close(self) -> None:
        self._model.close()
