from __future__ import annotations

from fastapi import APIRouter

from server.dependencies import Client
from service.protocol import TokenizeRequest

router = APIRouter()


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, client: Client) -> dict[str, object]:
    """The token ids the engine sees for a prompt or a chat (vLLM's /tokenize shape)."""
    return await client.tokenize(body)
