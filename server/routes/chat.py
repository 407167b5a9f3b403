from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from server.dependencies import Client
from server.sse import sse_response
from service.protocol import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, client: Client) -> dict[str, object] | StreamingResponse:
    if body.stream:
        return sse_response(await client.chat_stream(body))
    return await client.chat(body)
