"""What lets another server drive a model here as a raw engine (a remote model of flavour jarvis,
in vLLM's shapes): raw text to token ids and back, and what the model is."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.base import EngineError
from core.generation import GenerationCore, check_text, checked_ids
from core.remote import service_error


async def tokenize(core: GenerationCore, model: str | None, text: str, *, special: bool, add_bos: bool) -> tuple[list[int], int]:
    """The token ids of raw text as the model's engine makes them, and its context."""
    check_text(text, "prompt")
    lease, _ = await core.acquire(model)
    try:
        ids = await asyncio.to_thread(lease.engine.tokenize, text, special=special, add_bos=add_bos)
        return ids, lease.info.context_length
    except EngineError as error:
        raise service_error(error) from error
    finally:
        lease.release()


async def detokenize(core: GenerationCore, model: str | None, ids: list[int]) -> str:
    lease, _ = await core.acquire(model)
    try:
        return await asyncio.to_thread(lease.engine.detokenize, checked_ids(tuple(ids), lease.info.vocab_size))
    except EngineError as error:
        raise service_error(error) from error
    finally:
        lease.release()


async def describe(core: GenerationCore, model: str | None) -> dict[str, Any]:
    """What a model is: its context, architecture, template, special tokens and capabilities."""
    lease, _ = await core.acquire(model)
    try:
        info = lease.info
        return {
            "model": lease.model.entry.alias,
            "model_id": info.model_id,
            "engine": lease.engine.name,
            "architecture": info.architecture,
            "context_length": info.context_length,
            "chat_format": lease.chat_format.name,
            "chat_template": info.chat_template,
            "bos_token": info.bos_token,
            "eos_token": info.eos_token,
            "special_tokens": sorted(info.special_tokens),
            "vocab_size": info.vocab_size,
            "capabilities": {"grammar": info.capabilities.grammar, "embeddings": info.capabilities.embeddings},
        }
    finally:
        lease.release()
