"""The admin API: status, loading and unloading models, the engines this machine can run and
switching between them, translating a `vllm serve` command. Registry changes are in
`admin_registry`. Needs JARVIS_ADMIN_KEY; every action is written to the audit trail."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from backends import choose_engine, machine_report, preferred_engine
from backends.kinds import local_engine_names
from server.dependencies import AdminIdentity, AppSettings, Client, require_admin_key
from service.errors import InvalidRequestError
from service.metrics_history import MetricsHistory, process_rss_bytes
from service.vllm_command import CommandParseError, parse_vllm_command

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])


class EngineSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A model switches between the engines that run it here; auto: the rule of JARVIS_INFERENCE_ENGINE=auto.
    engine: Literal[(*local_engine_names(), "auto")]  # type: ignore[valid-type]
    model: str | None = None  # alias; default: the default model


class CommandText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str


@router.get("/status")
async def status(client: Client, settings: AppSettings) -> dict[str, object]:
    registry = client.models.registry
    return {
        "engine": client.engine_name,
        "engine_setting": settings.inference_engine,
        "engine_choice": client.engine_choice_reason,
        "fallback": client.models.default.fallback,
        "ready": client.ready,
        "stage": client.loading_stage if not client.ready else "ready",
        "failure": client.failure,
        "uptime_seconds": round(time.time() - client.started_at, 1),
        "process_rss_bytes": process_rss_bytes(),
        "registry": {"path": str(registry.file.path), "source": registry.source},
        "default_model": client.models.default.entry.alias,
        # /v1 needs JARVIS_API_KEY (the settings page asks for it before its test box sends).
        "api_key_required": settings.api_key is not None,
        "models": [model.status() for model in client.models.models],
    }


@router.get("/metrics")
async def recent_metrics(request: Request) -> dict[str, object]:
    """The server's own metrics over the last minutes, one point per few seconds (the settings
    page's charts): requests per minute to the model APIs, mean time to first token, decode
    tokens per second, prompt-cache hit rate, process memory."""
    history: MetricsHistory = request.app.state.metrics_history
    return history.report()


@router.get("/backends")
async def backends(client: Client, settings: AppSettings) -> dict[str, object]:
    """Which engines can run here and why not, their builds, the GPUs, and the current choice."""
    report = await asyncio.to_thread(machine_report, settings.cache_dir)
    preferred, preferred_reason = preferred_engine(settings.preferred_engine)
    return {
        **report,
        "choice": {
            "setting": settings.inference_engine,
            "engine": client.engine_name,
            "reason": client.engine_choice_reason,
            "fallback": client.models.default.fallback,
            **({"preferred": preferred, "preferred_reason": preferred_reason} if settings.inference_engine == "fallback" else {}),
        },
    }


@router.post("/models/{alias}/load")
async def load_model(alias: str, client: Client, identity: AdminIdentity) -> dict[str, object]:
    before = client.models.by_alias(alias).state.value
    model = await client.models.load(alias)
    client.audit.record(identity, f"load {alias}", before, model.state.value)
    return model.status()


@router.post("/models/{alias}/unload")
async def unload_model(alias: str, client: Client, identity: AdminIdentity) -> dict[str, object]:
    before = client.models.by_alias(alias).state.value
    model = await client.models.unload(alias)
    client.audit.record(identity, f"unload {alias}", before, model.state.value)
    return {**model.status(), "process_rss_bytes": process_rss_bytes()}


@router.post("/engine")
async def switch_engine(body: EngineSwitch, client: Client, identity: AdminIdentity) -> dict[str, object]:
    """Serve a model (default: the default model) on another engine until the next start; the
    registry is unchanged (PUT /admin/models/{alias} changes it for good)."""
    engine, reason = choose_engine(body.engine) if body.engine == "auto" else (body.engine, "switched by the admin API")
    target = client.models.by_alias(body.model) if body.model else client.models.default
    model, previous = await client.models.switch_engine(engine, target.entry.alias)
    if model is client.models.default:
        client.engine_choice_reason = reason
    client.audit.record(identity, f"switch engine of {model.entry.alias}", previous, engine)
    return {"model": model.entry.alias, "from": previous, "to": engine, "reason": reason, **model.status()}


@router.post("/parse-command")
async def parse_command(body: CommandText, client: Client, identity: AdminIdentity) -> dict[str, object]:
    try:
        parsed = parse_vllm_command(body.command)
    except CommandParseError as error:
        client.audit.record(identity, "parse-command", body.command, f"error: {error}")
        raise InvalidRequestError(str(error), param="command") from None
    client.audit.record(identity, "parse-command", body.command, parsed.entry)
    return {"entry": parsed.entry, "env": parsed.env_lines, "unmapped": parsed.unmapped}
