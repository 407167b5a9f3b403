from __future__ import annotations

from fastapi import APIRouter

from server.dependencies import Client
from service.protocol import EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, client: Client) -> dict[str, object]:
    return await client.embed(body)
