"""The model registry at runtime: list, create, change and delete entries. Every change is
validated as models.yaml is, persisted atomically, applied to the running models (a loaded
model reloads once its in-flight requests finish) and written to the audit trail."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from backends import engine_kind, engine_names
from server.dependencies import AdminIdentity, AppSettings, Client, require_admin_key
from service.errors import InvalidRequestError
from service.managed_model import ManagedModel, ModelState
from service.model_files import source_warnings
from service.model_inspect import SourceError, inspect_source
from service.registry_edits import Edit

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])

EntryBody = Body(..., description="a models.yaml entry as JSON")


class ProposeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, description="a GGUF file, an HF model folder, an HF model id, or a `vllm serve ...` command")
    alias: str | None = None
    engine: Literal[engine_names()] | None = None  # type: ignore[valid-type]
    chat_format: str | None = None
    context_size: int | None = Field(None, ge=256)


def _view(client: Client, model: ManagedModel) -> dict[str, object]:
    settings = client.settings
    return {
        **model.status(),
        "entry": model.entry.document(),
        "effective_options": client.models.engine_options(model.serving_entry),
        "effective_context_size": model.entry.context_size or settings.context_size,
        "keep_alive_seconds": client.models.keep_alive_seconds(model),
        # What a field the entry leaves out (or clears with null) takes: the JARVIS_ settings.
        "server_defaults": {
            "context_size": settings.context_size,
            "keep_alive_seconds": settings.keep_alive_seconds,
            "options": settings.engine_defaults(engine_kind(model.entry.engine)),
        },
    }


def _registry(client: Client, edit: Edit | None = None) -> dict[str, object]:
    registry = client.models.registry
    answer: dict[str, object] = {"path": str(registry.file.path), "source": registry.source}
    if edit is not None and edit.created_file:
        answer["created"] = True
        answer["note"] = (
            f"this server had no registry file: it wrote {edit.path}, which it (and the next start) "
            "reads while JARVIS_MODELS_FILE is unset"
        )
    return answer


@router.get("/models")
async def list_models(client: Client) -> dict[str, object]:
    return {"registry": _registry(client), "models": [_view(client, model) for model in client.models.models]}


@router.get("/models/{alias}")
async def get_model(alias: str, client: Client) -> dict[str, object]:
    return _view(client, client.models.by_alias(alias))


@router.post("/propose-model")
async def propose_model(body: ProposeModel, client: Client, identity: AdminIdentity, settings: AppSettings) -> dict[str, object]:
    """The entry `jarvis add-model` would write for a source on this server's machine, from what
    the model's files say about themselves; nothing is written (POST /admin/models adds it)."""
    try:
        proposal = await asyncio.to_thread(
            inspect_source, body.source, default_context=settings.context_size, alias=body.alias, engine=body.engine,
            chat_format=body.chat_format, context_size=body.context_size,
        )
    except SourceError as error:
        client.audit.record(identity, "propose-model", body.source, f"error: {error}")
        raise InvalidRequestError(str(error), param="source") from None
    client.audit.record(identity, "propose-model", body.source, proposal.entry)
    return {"entry": proposal.entry, "detected": proposal.detected, "notes": proposal.notes}


@router.post("/models", status_code=201)
async def create_model(client: Client, identity: AdminIdentity, entry: dict[str, Any] = EntryBody) -> dict[str, object]:
    edit, _ = await client.models.registry.create(entry)
    client.audit.record(identity, f"create model {edit.alias}", None, edit.after)
    return {
        "created": edit.alias,
        "registry": _registry(client, edit),
        "warnings": source_warnings(str(edit.after.get("model", "")) if edit.after else ""),
        **_view(client, client.models.by_alias(edit.alias)),
    }


@router.put("/models/{alias}")
async def update_model(alias: str, client: Client, identity: AdminIdentity, changes: dict[str, Any] = EntryBody) -> dict[str, object]:
    """`changes`: the fields to change; `options` is merged key by key; null removes a field or
    an option. A loaded model whose engine, model, chat format, context or options change is
    reloaded once its in-flight requests finish; the answer comes when it is loaded again."""
    edit, applied = await client.models.registry.update(alias, changes)
    client.audit.record(identity, f"update model {alias}", edit.before, edit.after)
    model = client.models.by_alias(edit.alias)
    outcome = applied.outcomes.get(edit.alias, "updated")
    # The change is saved either way; a model that no longer loads says why in `failure`.
    return {
        "updated": edit.alias,
        "outcome": outcome,
        "reloaded": outcome == "reloaded" and model.state == ModelState.LOADED,
        "registry": _registry(client, edit),
        **_view(client, model),
    }


@router.delete("/models/{alias}")
async def delete_model(alias: str, client: Client, identity: AdminIdentity) -> dict[str, object]:
    was_loaded = client.models.by_alias(alias).state in (ModelState.LOADED, ModelState.LOADING)
    edit, _ = await client.models.registry.delete(alias)
    client.audit.record(identity, f"delete model {alias}", edit.before, None)
    return {"deleted": edit.alias, "unloading": was_loaded, "registry": _registry(client, edit)}
