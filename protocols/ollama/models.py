"""Ollama's view of the registry: `name:tag` names, and the bodies of /api/tags, /api/ps and
/api/show built from the registry, the loaded engines and the model files."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chat_formats import ChatFormat, ChatFormatError, resolve_chat_format
from protocols.ollama.wire import timestamp
from service.errors import InvalidRequestError, ModelNotFoundError, ServiceError
from service.gguf_client import GGUFClient
from service.model_facts import ModelFacts, ModelFactsCache, human_number
from service.model_manager import ManagedModel, ModelState

JSON = dict[str, Any]

# What a forever keep-alive shows as expires_at: Go's largest duration after now, as Ollama does.
FOREVER_SECONDS = (2**63 - 1) / 1e9


class OllamaModelNotFoundError(ServiceError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found", param="model", code="model_not_found")


def tagged(name: str) -> str:
    """A model name with its tag: Ollama reads `gemma3` as `gemma3:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def find_model(client: GGUFClient, name: str) -> ManagedModel | None:
    """The registry entry one of whose names is `name` (`name` and `name:latest` are one)."""
    wanted = tagged(name)
    for model in client.models.models:
        if any(tagged(alias) == wanted for alias in model.entry.names()):
            return model
    return None


def serving_alias(client: GGUFClient, name: str) -> str:
    """The registry alias that serves a request for `name`. With one model configured every name
    is served by it (as on /v1); with several, an unknown name is a 404."""
    if not name:
        raise InvalidRequestError("model is required", param="model")
    model = find_model(client, name)
    if model is None:
        try:
            model = client.models.resolve(name)  # also by its file or model id, as on /v1
        except ModelNotFoundError:
            raise OllamaModelNotFoundError(name) from None
    return model.entry.alias


def chat_format_of(model: ManagedModel, facts: ModelFacts) -> ChatFormat | None:
    """The loaded model's chat format, or the one it will get, from its file's metadata."""
    if model.chat_format is not None:
        return model.chat_format
    template = facts.metadata.get("tokenizer.chat_template")
    try:
        return resolve_chat_format(model.entry.chat_format, facts.architecture, template if isinstance(template, str) else None)
    except ChatFormatError:
        return None


def capabilities(model: ManagedModel, chat_format: ChatFormat | None) -> list[str]:
    """What /api/show lists: completion always; tools unless turned off; thinking where the chat
    format separates it; embedding where the loaded engine makes embeddings."""
    found = ["completion"]
    tool_support = model.entry.tool_support if model.entry.tool_support != "auto" else (chat_format.tool_support if chat_format else "native")
    if tool_support != "none":
        found.append("tools")
    if chat_format is not None and chat_format.reasoning:
        found.append("thinking")
    if model.info is not None and model.info.capabilities.embeddings:
        found.append("embedding")
    return found


def details(model: ManagedModel, facts: ModelFacts) -> JSON:
    family = facts.architecture or (model.info.architecture if model.info else "")
    return {
        "parent_model": "",
        "format": facts.format,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": human_number(facts.parameter_count) if facts.parameter_count else str(facts.metadata.get("general.size_label", "")),
        "quantization_level": facts.quantization,
    }


def _listing(name: str, model: ManagedModel, facts: ModelFacts, started_at: float) -> JSON:
    return {
        "name": tagged(name),
        "model": tagged(name),
        "modified_at": timestamp(facts.modified or started_at),
        "size": facts.size,
        "digest": facts.digest,
        "details": details(model, facts),
    }


async def _facts_of(cache: ModelFactsCache, chosen: list[ManagedModel]) -> list[ModelFacts]:
    """The models' facts gathered together, so that a listing waits for one digest at most."""
    return list(await asyncio.gather(*(cache.facts(model.entry.model) for model in chosen)))


async def tags(client: GGUFClient, cache: ModelFactsCache, started_at: float) -> JSON:
    """Every name of every registry entry, as Ollama lists each name of a model."""
    chosen = client.models.models
    entries = []
    for model, facts in zip(chosen, await _facts_of(cache, chosen), strict=True):
        entries.extend(_listing(name, model, facts, started_at) for name in model.entry.names())
    return {"models": entries}


async def running(client: GGUFClient, cache: ModelFactsCache, started_at: float) -> JSON:
    """The loaded models, the longest-lived first, as /api/ps lists them."""
    chosen = [model for model in client.models.models if model.state == ModelState.LOADED and model.info is not None]
    contexts = [model.info.context_length for model in chosen if model.info is not None]  # before the await: it may unload
    entries = []
    for model, facts, context in zip(chosen, await _facts_of(cache, chosen), contexts, strict=True):
        expires = client.models.expires_at(model)
        entries.append(
            {
                **_listing(model.entry.alias, model, facts, started_at),
                "expires_at": timestamp(expires if expires is not None else time.time() + FOREVER_SECONDS),
                "size_vram": 0,  # this server does not measure GPU memory
                "context_length": context,
            }
        )
    entries.sort(key=lambda entry: entry["expires_at"], reverse=True)
    return {"models": entries}


async def show(client: GGUFClient, cache: ModelFactsCache, model: ManagedModel, started_at: float) -> JSON:
    facts = await cache.facts(model.entry.model)
    chat_format = chat_format_of(model, facts)
    context = model.info.context_length if model.info else (model.entry.context_size or client.settings.context_size)
    stops = chat_format.stop if chat_format else ()
    parameters = "\n".join([f"num_ctx {context}", *(f'stop "{stop}"' for stop in stops)])
    source = str(facts.path) if facts.path else model.entry.model
    model_info = {key: value for key, value in facts.metadata.items() if key != "tokenizer.chat_template"}
    if facts.parameter_count:
        model_info.setdefault("general.parameter_count", facts.parameter_count)
    model_info.setdefault("general.architecture", facts.architecture or (model.info.architecture if model.info else ""))
    return {
        "modelfile": f"# Served by Jarvis LLM Proxy from its model registry\nFROM {source}\n" + "".join(f"PARAMETER {line}\n" for line in parameters.splitlines()),
        "parameters": parameters,
        "template": chat_format.template if chat_format else "",
        "details": details(model, facts),
        "model_info": model_info,
        "capabilities": capabilities(model, chat_format),
        "modified_at": timestamp(facts.modified or started_at),
    }
