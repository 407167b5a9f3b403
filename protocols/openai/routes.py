"""OpenAI routes: chat/completions, completions, embeddings, models, and /tokenize (vLLM's shape)."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from core import raw_engine
from core.embeddings import embed
from protocols.openai.chat import ChatRenderer, chat_input
from protocols.openai.completions import CompletionRenderer, completion_input
from protocols.openai.schema import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, EmbeddingRequest, TokenizeRequest
from protocols.tolerance import log_unknown_fields
from server.dependencies import AppSettings, Client, Core
from server.errors import openai_error
from server.sse import StreamFormat, data_line, stream_response
from service.model_manager import ManagedModel

router = APIRouter()

OPENAI_STREAM = StreamFormat("text/event-stream", data_line, lambda detail: data_line(openai_error(detail)), b"data: [DONE]\n\n")


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, core: Core, settings: AppSettings) -> dict[str, object] | StreamingResponse:
    generation = await core.start(chat_input(body))
    renderer = ChatRenderer(generation, settings.reasoning_output)
    if body.stream:
        return stream_response(renderer.stream(body.include_usage()), OPENAI_STREAM)
    return renderer.whole(await generation.collect())


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, core: Core) -> dict[str, object] | StreamingResponse:
    generation = await core.start(completion_input(body))
    renderer = CompletionRenderer(generation)
    if body.stream:
        return stream_response(renderer.stream(body.include_usage()), OPENAI_STREAM)
    return renderer.whole(await generation.collect())


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, core: Core) -> dict[str, object]:
    log_unknown_fields(body)
    model, vectors, tokens = await embed(core, body.model, body.inputs())

    def encode(vector: list[float]) -> object:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(vector)} for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, core: Core) -> dict[str, object]:
    """The token ids the engine sees for a prompt or a chat (vLLM's /tokenize shape)."""
    if body.messages is not None:
        chat = ChatCompletionRequest(model=body.model, messages=body.messages, tools=body.tools)
        prompt, ids, context = await core.render(chat_input(chat))
    else:
        prompt = body.prompt or ""
        ids, context = await raw_engine.tokenize(core, body.model, prompt, special=not body.split_special_tokens, add_bos=body.add_special_tokens)
    return {"tokens": ids, "count": len(ids), "max_model_len": context, "prompt": prompt}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, core: Core) -> dict[str, object]:
    """The text of token ids (vLLM's /detokenize shape)."""
    return {"prompt": await raw_engine.detokenize(core, body.model, body.tokens)}


@router.get("/tokenizer_info")
async def tokenizer_info(core: Core, model: str | None = None) -> dict[str, object]:
    """vLLM's /tokenizer_info (the chat template, BOS and EOS), and under `jarvis` what another
    server needs to drive this model as a raw engine (a remote model of flavour jarvis)."""
    described = await raw_engine.describe(core, model)
    return {
        "tokenizer_class": f"{described['engine']} ({described['architecture']})",
        "chat_template": described["chat_template"],
        "bos_token": described["bos_token"],
        "eos_token": described["eos_token"],
        "model_max_length": described["context_length"],
        "jarvis": described,
    }


def _model_card(model_id: str, model: ManagedModel, created: int) -> dict[str, object]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "jarvis-llm-proxy",
        "engine": model.running_engine,
        "state": model.state.value,
    }


@router.get("/v1/models")
async def list_models(request: Request, client: Client) -> dict[str, object]:
    created = request.app.state.started_at
    return {"object": "list", "data": [_model_card(name, model, created) for name, model in client.model_cards()]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, client: Client) -> dict[str, object]:
    for name, model in client.model_cards():
        if name == model_id:
            return _model_card(name, model, request.app.state.started_at)
    raise HTTPException(status_code=404, detail=f"The model {model_id!r} does not exist")

