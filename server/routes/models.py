from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from server.dependencies import Client
from service.model_manager import ManagedModel

router = APIRouter()


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
