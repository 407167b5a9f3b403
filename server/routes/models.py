from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from server.dependencies import Client

router = APIRouter()


def _model_card(model_id: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "jarvis-llm-proxy"}


@router.get("/v1/models")
async def list_models(request: Request, client: Client) -> dict[str, object]:
    created = request.app.state.started_at
    return {"object": "list", "data": [_model_card(model_id, created) for model_id in client.model_ids()]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, client: Client) -> dict[str, object]:
    if model_id not in client.model_ids():
        raise HTTPException(status_code=404, detail=f"The model {model_id!r} does not exist")
    return _model_card(model_id, request.app.state.started_at)
