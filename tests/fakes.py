"""A fake engine for the fast tier: implements the engine contract with scripted deltas and
records what it was asked."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Sequence

from backends.base import (
    ConstraintError,
    ConstraintSpec,
    Delta,
    EngineCapabilities,
    EngineError,
    EngineInfo,
    EngineOverloadedError,
    GenerationRequest,
)

# Special tokens the fake vocabulary has: with special parsing, each is one id from 1000 up.
SPECIAL_TOKENS = ("<start_of_turn>", "<end_of_turn>")


class FakeEngine:
    name = "fake"

    def __init__(self, context_length: int = 4096, architecture: str = "gemma3", chat_template: str | None = None) -> None:
        self._info = EngineInfo(
            model_id="fake-model",
            context_length=context_length,
            architecture=architecture,
            capabilities=EngineCapabilities(grammar=True, embeddings=True),
            chat_template=chat_template,
            eos_token="</s>",
            special_tokens=frozenset(SPECIAL_TOKENS),
            vocab_size=2000,
        )
        self.scripts: list[Sequence[str] | BaseException] = []
        self.requests: list[GenerationRequest] = []
        self.prompts: list[str] = []
        self.tokenize_calls: list[tuple[str, bool, bool]] = []  # (text, special, add_bos)
        self.finish_reason = "stop"
        self.closed_early = 0
        self.started = False
        self.delay = 0.0
        self.active = 0
        self.failure: str | None = None
        self.compiled: list[ConstraintSpec] = []

    def queue(self, *pieces: str) -> None:
        """The next generation yields these pieces, then finishes."""
        self.scripts.append(pieces)

    def fail_next(self, error: BaseException) -> None:
        self.scripts.append(error)

    async def start(self) -> None:
        self.started = True
        self.starts = getattr(self, "starts", 0) + 1

    async def close(self) -> None:
        self.started = False
        self.closes = getattr(self, "closes", 0) + 1

    def stats(self) -> dict[str, int]:
        return {"busy_slots": self.active, "queue_length": 0, "parallel": 4}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Deterministic unit vectors derived from the text."""
        vectors = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            raw = [byte - 127.5 for byte in digest[:8]]
            norm = math.sqrt(sum(value * value for value in raw))
            vectors.append([value / norm for value in raw])
        return vectors

    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        """One token per byte keeps the arithmetic obvious; with `special`, each special token's
        text is one id. No BOS."""
        self.prompts.append(text)
        self.tokenize_calls.append((text, special, add_bos))
        ids: list[int] = []
        position = 0
        while position < len(text):
            match = next((token for token in SPECIAL_TOKENS if special and text.startswith(token, position)), None)
            if match is not None:
                ids.append(1000 + SPECIAL_TOKENS.index(match))
                position += len(match)
            else:
                ids.extend(text[position].encode("utf-8"))
                position += 1
        return ids

    def detokenize(self, token_ids: list[int]) -> str:
        return bytes(token for token in token_ids if token < 256).decode("utf-8", "replace")

    def compile_constraint(self, spec: ConstraintSpec) -> ConstraintSpec:
        """The spec itself is what reaches generate(); a schema with "x-uncompilable" fails."""
        if spec.schema and "x-uncompilable" in spec.schema:
            raise ConstraintError("the fake engine cannot compile this")
        self.compiled.append(spec)
        return spec

    def health(self) -> str | None:
        return self.failure

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else ("ok",)
        if isinstance(script, BaseException):
            raise script
        finished = False
        self.active += 1
        try:
            pieces = list(script)[: request.sampling.max_tokens]
            for count, piece in enumerate(pieces, start=1):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if isinstance(piece, BaseException):
                    raise piece
                last = count == len(pieces)
                reason = ("length" if len(script) > request.sampling.max_tokens else self.finish_reason) if last else None
                finished = last  # a consumer may close the iterator once it has the final delta
                yield Delta(piece, count, reason, prompt_tokens=len(request.prompt_token_ids))
        finally:
            self.active -= 1
            if not finished:
                self.closed_early += 1


__all__ = ["EngineError", "EngineOverloadedError", "FakeEngine"]
