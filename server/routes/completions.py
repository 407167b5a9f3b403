from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from server.dependencies import Client
from server.sse import sse_response
from service.protocol import CompletionRequest

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, client: Client) -> dict[str, object] | StreamingResponse:
    if body.stream:
        return sse_response(await client.complete_stream(body))
    return await client.complete(body)
