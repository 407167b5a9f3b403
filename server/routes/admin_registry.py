"""The model registry at runtime: list, create, change and delete entries. Every change is
validated as models.yaml is, persisted atomically, applied to the running models (a loaded
model reloads once its in-flight requests finish) and written to the audit trail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from server.dependencies import AdminIdentity, Client, require_admin_key
from service.managed_model import ManagedModel, ModelState
from service.model_files import source_warnings
from service.registry_edits import Edit

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])

EntryBody = Body(..., description="a models.yaml entry as JSON")


def _view(client: Client, model: ManagedModel) -> dict[str, object]:
    return {
        **model.status(),
        "entry": model.entry.document(),
        "effective_options": client.models.engine_options(model.serving_entry),
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
