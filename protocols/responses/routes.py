"""OpenAI Responses routes: create (whole or streamed as typed SSE events), retrieve and delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from core.types import Message
from protocols.responses.render import ResponseRenderer, new_id
from protocols.responses.request import conversation_of, echo_fields, responses_input
from protocols.responses.schema import ResponsesRequest
from protocols.responses.store import ResponseStore, StoredResponse
from server.dependencies import Core
from server.sse import StreamFormat, named_event, stream_response

router = APIRouter()


def get_store(request: Request) -> ResponseStore:
    return request.app.state.response_store


Store = Annotated[ResponseStore, Depends(get_store)]


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponsesRequest, core: Core, store: Store) -> dict[str, Any] | StreamingResponse:
    previous = store.previous(body.previous_response_id) if body.previous_response_id else None
    conversation = conversation_of(body, previous.conversation if previous else ())
    request = responses_input(body, conversation, previous.cache_key if previous else None)
    generation = await core.start(request)

    def keep(response: dict[str, Any], turn: Message) -> None:
        store.put(StoredResponse(response, (*conversation, turn), request.cache_key))

    renderer = ResponseRenderer(new_id("resp"), generation.model, echo_fields(body), keep if body.store else None)
    if body.stream:
        # No `data: [DONE]`: a Responses stream ends with its terminal event.
        return stream_response(renderer.events(generation), StreamFormat("text/event-stream", named_event, renderer.failure))
    return await renderer.whole(generation)


@router.get("/v1/responses/{response_id}")
async def retrieve_response(response_id: str, store: Store) -> dict[str, Any]:
    return store.get(response_id).body


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, store: Store) -> dict[str, Any]:
    store.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}
