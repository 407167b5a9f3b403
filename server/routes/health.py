from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.dependencies import Client

router = APIRouter()


@router.get("/health")
async def health(client: Client) -> JSONResponse:
    """200 once the model is loaded; 503 with the current stage (or the failure) before that."""
    if client.ready:
        body = {"status": "ok", "engine": client.engine_name, "model": client.model_ids()[0]}
        fallback = client.models.default.fallback
        return JSONResponse({**body, "fallback": fallback} if fallback else body)
    stage = "failed" if client.failure else client.loading_stage
    reason = client.failure or stage
    return JSONResponse({"status": "unavailable", "stage": stage, "reason": reason}, status_code=503)
