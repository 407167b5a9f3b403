"""Embeddings through the core: inputs as text or token ids, checked against the context, and
counted, for every protocol that offers them."""

from __future__ import annotations

import asyncio

from core.generation import GenerationCore
from service.errors import ContextLengthExceededError, InvalidRequestError


async def embed(core: GenerationCore, model: str | None, inputs: list[str] | list[list[int]], param: str = "input") -> tuple[str, list[list[float]], int]:
    """The model alias that served, one unit vector per input, and the tokens they took."""
    lease, _ = await core.acquire(model)
    try:
        if not lease.info.capabilities.embeddings:
            raise InvalidRequestError(
                f"the model {lease.model.entry.alias!r} on the {lease.engine.name} engine cannot make embeddings; "
                "use a model whose engine supports them",
                param="model",
            )
        texts, counts = await asyncio.to_thread(_texts_and_counts, lease.engine, inputs, lease.info.vocab_size)
        for index, count in enumerate(counts):
            if count > lease.info.context_length:
                raise ContextLengthExceededError(
                    f"input {index} is {count} tokens, more than the model's context of {lease.info.context_length} tokens",
                    param=param,
                )
        vectors = await lease.engine.embed(texts)
        return lease.model.entry.alias, vectors, sum(counts)
    finally:
        lease.release()


def _texts_and_counts(engine: object, inputs: list[str] | list[list[int]], vocab_size: int) -> tuple[list[str], list[int]]:
    for index, item in enumerate(inputs):
        if isinstance(item, list) and vocab_size and any(token >= vocab_size for token in item):
            raise InvalidRequestError(f"input {index} has a token id outside the vocabulary (0 to {vocab_size - 1})", param="input")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequestError(f"input {index} contains a lone UTF-16 surrogate; send valid Unicode", param="input") from None
    texts = [item if isinstance(item, str) else engine.detokenize(item) for item in inputs]  # type: ignore[attr-defined]
    counts = [len(item) if isinstance(item, list) else len(engine.tokenize(item)) for item in inputs]  # type: ignore[attr-defined]
    return texts, counts
