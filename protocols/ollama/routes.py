"""The native Ollama API: /api/chat, /api/generate, /api/embed(dings), /api/tags, /api/ps,
/api/show, /api/pull, /api/version, answers for the model-management routes this server does not
offer, and `/` answering "Ollama is running". Errors on /api/ are Ollama's {"error": "..."}."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute

from chat_formats import ChatFormat
from core.embeddings import embed
from core.generation import GenerationCore
from core.types import GenerationInput
from protocols.ollama import models
from protocols.ollama.chat import ChatRenderer, chat_input
from protocols.ollama.generate import GenerateRenderer, generate_input
from protocols.ollama.schema import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ModelRequest, Options, Think
from protocols.ollama.wire import NDJSON, LineRenderer, keep_alive_seconds, nanoseconds, ollama_error, timestamp
from protocols.tolerance import log_unknown_fields
from server.dependencies import Client, Core
from server.errors import register_error_format
from server.sse import stream_response
from service.errors import InvalidRequestError, ServiceError
from service.gguf_client import GGUFClient
from service.model_facts import ModelFactsCache
from service.model_manager import Lease, ModelState

# The Ollama release whose API this adapter follows; clients read it to decide what to send.
OLLAMA_VERSION = "0.12.0"

register_error_format("/api/", ollama_error)


class JSONBodyRoute(APIRoute):
    """Reads every request body as JSON whatever its Content-Type, as Ollama does: its own examples
    use `curl -d`, which labels the JSON a form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def as_json(request: Request) -> Response:
            if request.headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
                headers = [(key, value) for key, value in request.scope["headers"] if key.lower() != b"content-type"]
                request = Request({**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}, request.receive)
            return await handler(request)

        return as_json


router = APIRouter(route_class=JSONBodyRoute)  # /api/..., behind the inference key
root_router = APIRouter()  # `/`, which clients probe to see that the server runs


def get_model_facts(request: Request) -> ModelFactsCache:
    return request.app.state.model_facts


Facts = Annotated[ModelFactsCache, Depends(get_model_facts)]


class UnsupportedOperationError(ServiceError):
    status_code = 501
    error_type = "invalid_request_error"


class NotInRegistryError(ServiceError):
    """A pull of a model this server does not have: it never downloads one."""

    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"pull model manifest: {name!r} is not in this server's model registry, and this server does not download "
            f"models. Its models: {', '.join(known)}. To add one, put an entry (alias, engine, model: a GGUF file or an "
            "HF model) in models.yaml (JARVIS_MODELS_FILE), or set JARVIS_MODEL_NAME, and restart the server",
            param="model",
            code="model_not_found",
        )


@root_router.get("/", response_class=PlainTextResponse, include_in_schema=False)
async def ollama_is_running() -> str:
    return "Ollama is running"


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@router.get("/api/tags")
async def list_models(request: Request, client: Client, facts: Facts) -> dict[str, object]:
    return await models.tags(client, facts, request.app.state.started_at)


@router.get("/api/ps")
async def running_models(request: Request, client: Client, facts: Facts) -> dict[str, object]:
    return await models.running(client, facts, request.app.state.started_at)


@router.post("/api/show")
async def show_model(body: ModelRequest, request: Request, client: Client, facts: Facts) -> dict[str, object]:
    log_unknown_fields(body)
    model = models.find_model(client, _required(body.model_name))
    if model is None:
        raise models.OllamaModelNotFoundError(body.model_name)
    return await models.show(client, facts, model, request.app.state.started_at)


# ---- generation ---------------------------------------------------------------------------


@router.post("/api/chat", response_model=None)
async def chat(body: ChatRequest, core: Core, client: Client) -> dict[str, object] | StreamingResponse:
    started = time.perf_counter()
    alias = models.serving_alias(client, body.model)
    _refuse_logprobs(body.logprobs)
    keep_alive = _keep_alive(body.keep_alive)
    if not body.messages:
        done_reason = await _load_or_unload(core, client, alias, keep_alive)
        return {"model": body.model, "created_at": timestamp(), "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": done_reason}
    return await _answer(core, client, alias, keep_alive, body, chat_input(body, alias), ChatRenderer, started)


@router.post("/api/generate", response_model=None)
async def generate(body: GenerateRequest, core: Core, client: Client) -> dict[str, object] | StreamingResponse:
    started = time.perf_counter()
    alias = models.serving_alias(client, body.model)
    _refuse_logprobs(body.logprobs)
    if body.images:
        raise InvalidRequestError("this server has no vision model loaded, so it cannot read images; send the prompt without images", param="images")
    if body.suffix:
        raise InvalidRequestError(f'"{body.model}" does not support insert', param="suffix")
    keep_alive = _keep_alive(body.keep_alive)
    if not body.prompt:
        done_reason = await _load_or_unload(core, client, alias, keep_alive)
        return {"model": body.model, "created_at": timestamp(), "response": "", "done": True, "done_reason": done_reason}
    return await _answer(core, client, alias, keep_alive, body, generate_input(body, alias), GenerateRenderer, started)


@router.post("/api/embed")
async def embed_texts(body: EmbedRequest, core: Core, client: Client) -> dict[str, object]:
    started = time.perf_counter()
    log_unknown_fields(body, body.options)
    alias = models.serving_alias(client, body.model)
    inputs = ([body.input] if body.input else []) if isinstance(body.input, str) else body.input
    async with _holding(core, client, alias, _keep_alive(body.keep_alive)) as (lease, waited):
        _check_context(body.options, lease)
        _, vectors, tokens = await embed(core, alias, inputs) if inputs else (alias, [], 0)
    if body.dimensions:
        vectors = [_shortened(vector, body.dimensions) for vector in vectors]
    return {
        "model": body.model,
        "embeddings": vectors,
        "total_duration": nanoseconds(time.perf_counter() - started),
        "load_duration": nanoseconds(waited),
        "prompt_eval_count": tokens,
    }


@router.post("/api/embeddings")
async def embed_legacy(body: EmbeddingsRequest, core: Core, client: Client) -> dict[str, object]:
    log_unknown_fields(body, body.options)
    alias = models.serving_alias(client, body.model)
    async with _holding(core, client, alias, _keep_alive(body.keep_alive)) as (lease, _):
        _check_context(body.options, lease)
        if not body.prompt:
            return {"embedding": []}
        _, vectors, _ = await embed(core, alias, [body.prompt], param="prompt")
    return {"embedding": vectors[0]}


# ---- pull and the model-management routes -------------------------------------------------


@router.post("/api/pull", response_model=None)
async def pull(body: ModelRequest, core: Core, client: Client, facts: Facts) -> dict[str, object] | StreamingResponse:
    """A model of the registry: Ollama's progress lines (its file is already here), then it is
    loaded. Anything else: this server does not download models."""
    log_unknown_fields(body)
    name = _required(body.model_name)
    model = models.find_model(client, name)
    if model is None:
        raise NotInRegistryError(name, [models.tagged(alias) for alias in client.model_ids()])
    alias = model.entry.alias

    async def progress() -> AsyncIterator[dict[str, object]]:
        yield {"status": "pulling manifest"}
        found = await facts.facts(model.entry.model)
        if found.path is not None:
            layer = {"digest": f"sha256:{found.digest}"} if found.digest else {}
            yield {"status": f"pulling {found.digest[:12] or found.path.name}", **layer, "total": found.size, "completed": found.size}
        yield {"status": f"loading {models.tagged(name)}"}
        lease, _ = await core.acquire(alias)
        lease.release()
        yield {"status": "success"}

    if body.stream:
        return stream_response(progress(), NDJSON)
    async for line in progress():
        last = line
    return last


_UNSUPPORTED = {
    "create": "this server does not create models: its models come from its model registry (models.yaml, "
    "JARVIS_MODELS_FILE); add an entry there (alias, engine, model: a GGUF file or an HF model) and restart the server",
    "copy": "this server does not copy models: give a model another name with `aliases` in its models.yaml entry",
    "delete": "this server does not delete models: remove the entry from models.yaml (JARVIS_MODELS_FILE) and restart "
    "the server; to free a model's memory, send keep_alive 0 or POST /admin/models/{alias}/unload",
    "push": "this server does not push models to a registry",
    "blobs": "this server does not store blobs: its models come from its model registry (models.yaml, JARVIS_MODELS_FILE)",
}


def _unsupported(operation: str) -> Callable[[], Awaitable[None]]:
    async def refuse() -> None:
        raise UnsupportedOperationError(_UNSUPPORTED[operation])

    return refuse


router.add_api_route("/api/create", _unsupported("create"), methods=["POST"])
router.add_api_route("/api/copy", _unsupported("copy"), methods=["POST"])
router.add_api_route("/api/delete", _unsupported("delete"), methods=["DELETE"])
router.add_api_route("/api/push", _unsupported("push"), methods=["POST"])
router.add_api_route("/api/blobs/{digest}", _unsupported("blobs"), methods=["POST"])


# ---- helpers --------------------------------------------------------------------------------


def _required(name: str) -> str:
    if not name:
        raise InvalidRequestError("model is required", param="model")
    return name


def _keep_alive(value: float | str | None) -> float | None:
    try:
        return keep_alive_seconds(value)
    except ValueError as error:
        raise InvalidRequestError(str(error), param="keep_alive") from None


def _refuse_logprobs(logprobs: bool | None) -> None:
    if logprobs:
        raise InvalidRequestError("logprobs are not supported by this server", param="logprobs")


async def _answer(
    core: GenerationCore, client: GGUFClient, alias: str, keep_alive: float | None, body: ChatRequest | GenerateRequest,
    request: GenerationInput, renderer: type[LineRenderer], started: float,
) -> dict[str, object] | StreamingResponse:
    """Start the generation on the held model and answer it as one body or as NDJSON lines."""
    async with _holding(core, client, alias, keep_alive) as (lease, waited):
        think = _thinking(body.think, lease.chat_format, body.model)
        _check_context(body.options, lease)
        generation = await core.start(request)
    rendering = renderer(generation, body.model, think, started, waited)
    if body.stream:
        return stream_response(rendering.stream(), NDJSON)
    return rendering.whole(await generation.collect())


@contextlib.asynccontextmanager
async def _holding(core: GenerationCore, client: GGUFClient, alias: str, keep_alive: float | None) -> AsyncIterator[tuple[Lease, float]]:
    """A lease on the model (loading it) while a request is checked and started, with the
    request's keep-alive applied; yields it and the seconds the load took."""
    lease, waited = await core.acquire(alias)
    try:
        client.models.set_keep_alive(lease.model, keep_alive)
        yield lease, waited
    finally:
        lease.release()


async def _load_or_unload(core: GenerationCore, client: GGUFClient, alias: str, keep_alive: float | None) -> str:
    """Ollama's requests without a prompt: keep_alive 0 unloads the model, anything else loads it."""
    if keep_alive == 0:
        if client.models.by_alias(alias).state == ModelState.LOADED:
            await client.models.unload(alias)
        return "unload"
    async with _holding(core, client, alias, keep_alive):
        return "load"


def _thinking(think: Think | None, chat_format: ChatFormat, name: str) -> bool:
    """Whether thinking is sent: on by default where the chat format separates it, as Ollama does
    for thinking models; asked for on a model that cannot think, a 400."""
    can_think = chat_format.reasoning is not None
    if think is None:
        return can_think
    if think is not False and not can_think:
        raise InvalidRequestError(f'"{name}" does not support thinking', param="think")
    return think is not False


def _check_context(options: Options | None, lease: Lease) -> None:
    """num_ctx up to the loaded context is served within it; more is refused, never truncated."""
    wanted, context = (options.num_ctx if options else None), lease.info.context_length
    if wanted is not None and wanted > context:
        raise InvalidRequestError(
            f"options.num_ctx asks for {wanted} tokens of context, but this server runs {lease.model.entry.alias} with "
            f"{context}; send num_ctx {context} or less, or raise the model's context (JARVIS_CONTEXT_SIZE, or "
            "context_size in models.yaml; max_model_len on vLLM) and restart",
            param="options.num_ctx",
        )


def _shortened(vector: list[float], dimensions: int) -> list[float]:
    """Ollama's `dimensions`: the first N values, normalized again."""
    if dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(value * value for value in head)) or 1.0
    return [value / norm for value in head]
