"""Warm prompts: conversations a model entry names (`warm_prompts`, a JSON or YAML file) that are
prefilled into the prompt cache when the model loads, so the first real request (the household's
system prompt and tools) finds its prefix cached. Before the model serves, or right after
(`warm_when`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from core.generation import GenerationCore
from core.types import GenerationInput, Message, Sampling, Tool
from service.errors import ServiceError
from service.managed_model import ManagedModel

logger = logging.getLogger(__name__)


class WarmPromptError(ValueError):
    """The warm-prompt file cannot be used; the message names the file and the problem."""


def read_warm_prompts(path: Path) -> list[GenerationInput]:
    """The conversations of a warm-prompt file: a list of {"messages": [...], "tools": [...]}
    (messages with role and content; tools in OpenAI's function form)."""
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise WarmPromptError(f"warm prompts {path}: cannot read it ({error})") from None
    items = document if isinstance(document, list) else [document]
    return [_conversation(path, index, item) for index, item in enumerate(items)]


def _conversation(path: Path, index: int, item: Any) -> GenerationInput:
    if not isinstance(item, dict) or not isinstance(item.get("messages"), list) or not item["messages"]:
        raise WarmPromptError(f"warm prompts {path}: entry {index} needs a non-empty messages list")
    try:
        messages = tuple(Message(str(m["role"]), str(m.get("content") or "")) for m in item["messages"])  # type: ignore[arg-type]
        tools = tuple(
            Tool(t["function"]["name"], t["function"].get("description"), t["function"].get("parameters"))
            for t in item.get("tools") or []
        )
    except (KeyError, TypeError) as error:
        raise WarmPromptError(f"warm prompts {path}: entry {index}: {error!r} is missing or malformed") from None
    return GenerationInput(model=None, messages=messages, tools=tools, sampling=Sampling(temperature=0), max_tokens=1, warm=True)


class WarmPrompts:
    """Runs a model's warm prompts after it loads (ModelManager's on_loaded hook)."""

    def __init__(self, core: GenerationCore) -> None:
        self._core = core

    async def after_load(self, model: ManagedModel) -> None:
        path = model.entry.warm_prompts
        if path is None:
            return
        if model.entry.warm_when == "after_ready":
            asyncio.get_running_loop().create_task(self._run(model, path))
        else:
            await self._run(model, path)

    async def _run(self, model: ManagedModel, path: Path) -> None:
        started = time.perf_counter()
        try:
            conversations = await asyncio.to_thread(read_warm_prompts, path)
        except WarmPromptError as error:
            logger.warning("%s: %s", model.entry.alias, error)
            return
        tokens = 0
        for conversation in conversations:
            try:
                generation = await self._core.start(conversation.__class__(**{**conversation.__dict__, "model": model.entry.alias}))
                tokens += (await generation.collect()).finish.usage.prompt_tokens
            except ServiceError as error:
                logger.warning("%s: a warm prompt of %s failed: %s", model.entry.alias, path, error.message)
        logger.info(
            "%s: %d warm prompts (%d tokens) prefilled in %.1f s", model.entry.alias, len(conversations), tokens, time.perf_counter() - started
        )
