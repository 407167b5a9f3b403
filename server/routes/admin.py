"""The admin API: status, loading and unloading models, switching engine, translating a
`vllm serve` command. Needs JARVIS_ADMIN_KEY; every action is written to the audit trail."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from server.dependencies import AdminIdentity, Client, require_admin_key
from service.errors import InvalidRequestError
from service.vllm_command import CommandParseError, parse_vllm_command

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin_key)])


class EngineSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["llama_cpp", "vllm"]
    model: str | None = None  # alias; default: the default model


class CommandText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str


def process_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@router.get("/status")
async def status(client: Client) -> dict[str, object]:
    return {
        "engine": client.engine_name,
        "engine_choice": client.engine_choice_reason,
        "ready": client.ready,
        "uptime_seconds": round(time.time() - client.started_at, 1),
        "process_rss_bytes": process_rss_bytes(),
        "models": [model.status() for model in client.models.models],
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
    model, previous = await client.models.switch_engine(body.engine, body.model)
    client.audit.record(identity, f"switch engine of {model.entry.alias}", previous, body.engine)
    return {"model": model.entry.alias, "from": previous, "to": body.engine, **model.status()}


@router.post("/parse-command")
async def parse_command(body: CommandText, client: Client, identity: AdminIdentity) -> dict[str, object]:
    try:
        parsed = parse_vllm_command(body.command)
    except CommandParseError as error:
        client.audit.record(identity, "parse-command", body.command, f"error: {error}")
        raise InvalidRequestError(str(error), param="command") from None
    client.audit.record(identity, "parse-command", body.command, parsed.entry)
    return {"entry": parsed.entry, "env": parsed.env_lines, "unmapped": parsed.unmapped}
