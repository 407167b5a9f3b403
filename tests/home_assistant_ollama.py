"""Home Assistant's built-in Ollama integration (homeassistant/components/ollama: config_flow.py,
__init__.py, coordinator.py, sensor.py, entity.py), replayed: the same `ollama.AsyncClient` calls
with the same arguments, reading the same fields of each answer, so a test sees exactly what Home
Assistant would. What Home Assistant does with the answers beyond that (its chat log, its UI) is
left out; every read it makes of a response is here."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama

# homeassistant/components/ollama/const.py
DEFAULT_TIMEOUT = 5.0
KEEP_ALIVE_FOREVER = -1
DEFAULT_NUM_CTX = 8192
MIN_NUM_CTX = 2048


class ConfigEntryAuthFailed(Exception):
    """Home Assistant asks the user to sign in again."""


class ConfigEntryError(Exception):
    """Home Assistant gives up on the entry: the URL is likely not an Ollama server."""


class UpdateFailed(Exception):
    """Home Assistant retries the poll later."""


def make_client(url: str, api_key: str | None = None, **httpx_options: Any) -> ollama.AsyncClient:
    """config_flow.py / __init__.py: the client, with the API key as a Bearer token when set."""
    return ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {api_key}"} if api_key else None, **httpx_options)


async def validate_connection(url: str, api_key: str | None, **httpx_options: Any) -> dict[str, str]:
    """config_flow.OllamaConfigFlow._async_validate_connection."""
    errors: dict[str, str] = {}
    try:
        client = make_client(url, api_key, **httpx_options)
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            await client.list()
    except ollama.ResponseError as err:
        errors["base"] = "invalid_auth" if err.status_code in (401, 403) else "unknown"
    except (TimeoutError, httpx.ConnectError):
        errors["base"] = "cannot_connect"
    return errors


async def downloaded_models(client: ollama.AsyncClient) -> set[str]:
    """config_flow.OllamaSubentryFlowHandler.async_step_set_options: the models offered first."""
    async with asyncio.timeout(DEFAULT_TIMEOUT):
        response = await client.list()
    return {model_info["model"] for model_info in response.get("models", [])}


async def choose_model(client: ollama.AsyncClient, model: str) -> str:
    """async_step_set_options then async_step_download: a model that is not listed is pulled.
    Returns the step Home Assistant ends on: finish (created) or failed (download_failed)."""
    if model in await downloaded_models(client):
        return "finish"
    try:
        await client.pull(model)
    except Exception:  # Home Assistant logs any failure and aborts with download_failed
        return "failed"
    return "finish"


async def setup_entry(client: ollama.AsyncClient) -> None:
    """__init__.async_setup_entry: the server must list its models within 5 s."""
    async with asyncio.timeout(DEFAULT_TIMEOUT):
        await client.list()


@dataclass(frozen=True)
class OllamaData:
    loaded: ollama.ProcessResponse | None
    installed: ollama.ListResponse


async def _request(request: Any) -> Any:
    """coordinator.OllamaDataUpdateCoordinator._request."""
    try:
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            return await request
    except ollama.ResponseError as err:
        if err.status_code in (401, 403):
            raise ConfigEntryAuthFailed from err
        if err.status_code >= 500 or err.status_code == 429:
            raise UpdateFailed(str(err)) from err
        raise ConfigEntryError(err) from err
    except (TimeoutError, httpx.HTTPError, ConnectionError) as err:
        raise UpdateFailed(str(err)) from err


async def _optional_request(request: Any) -> Any:
    try:
        return await _request(request)
    except ConfigEntryAuthFailed:
        raise
    except (ConfigEntryError, UpdateFailed):
        return None


async def poll(client: ollama.AsyncClient) -> OllamaData:
    """The coordinator's update, every 30 s: /api/tags and /api/ps together."""
    installed, loaded = await asyncio.gather(_request(client.list()), _optional_request(client.ps()))
    return OllamaData(loaded, installed)


def sensor_values(data: OllamaData) -> dict[str, Any]:
    """sensor.SENSORS: every value and attribute the integration's sensors read."""
    assert data.loaded is not None
    return {
        "loaded_models": len(data.loaded.models),
        "loaded_names": sorted(model.model for model in data.loaded.models if model.model),
        "installed_models": len(data.installed.models),
        "installed_names": sorted(model.model for model in data.installed.models if model.model),
        "loaded_model_size": sum(model.size or 0 for model in data.loaded.models),
        "loaded_model_gpu_memory": sum(model.size_vram or 0 for model in data.loaded.models),
    }


# ---- a conversation turn (entity.py) ---------------------------------------------------------


def format_tool(name: str, description: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """entity._format_tool."""
    tool_spec: dict[str, Any] = {"name": name, "parameters": parameters}
    if description:
        tool_spec["description"] = description
    return {"type": "function", "function": tool_spec}


def _fix_invalid_arguments(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if (value.startswith("[") and value.endswith("]")) or (value.startswith("{") and value.endswith("}")):
        try:
            return json.loads(value)
        except json.decoder.JSONDecodeError:
            pass
    return value


def _parse_tool_args(arguments: dict[str, Any]) -> dict[str, Any]:
    """entity._parse_tool_args: it calls .items() on the arguments, so they must be an object."""
    return {k: _fix_invalid_arguments(v) for k, v in arguments.items() if v is not None and v != ""}


@dataclass
class AssistantTurn:
    """What entity._transform_stream yields, gathered as Home Assistant's chat log gathers it."""

    deltas: list[dict[str, Any]] = field(default_factory=list)
    responses: list[ollama.ChatResponse] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(delta.get("content", "") for delta in self.deltas)

    @property
    def thinking(self) -> str:
        return "".join(delta.get("thinking_content", "") for delta in self.deltas)

    @property
    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        return [call for delta in self.deltas for call in delta.get("tool_calls", [])]

    def message(self) -> ollama.Message:
        """entity._convert_content of the AssistantContent, for the next round's history."""
        return ollama.Message(
            role="assistant",
            content=self.content,
            thinking=self.thinking or None,
            tool_calls=[
                ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(name=name, arguments=args)) for name, args in self.tool_calls
            ]
            or None,
        )


def tool_result(data: Any, error: Any = None) -> ollama.Message:
    """entity._convert_content of a ToolResultContent: no tool_name, no tool_call_id."""
    return ollama.Message(role="tool", content=json.dumps({"data": data, "error": error}))


async def chat_round(
    client: ollama.AsyncClient,
    model: str,
    messages: list[ollama.Message],
    tools: list[dict[str, Any]] | None,
    keep_alive_seconds: int = KEEP_ALIVE_FOREVER,
    num_ctx: int = DEFAULT_NUM_CTX,
    think: bool | None = None,
    output_format: dict[str, Any] | None = None,
) -> AssistantTurn:
    """One iteration of entity._async_handle_chat_log: the streamed chat request and
    _transform_stream's reading of every line."""
    response_generator = await client.chat(
        model=model,
        messages=list(messages),
        tools=tools,
        stream=True,
        keep_alive=keep_alive_seconds if keep_alive_seconds == KEEP_ALIVE_FOREVER else f"{keep_alive_seconds}s",
        options={"num_ctx": num_ctx},
        think=think,
        format=output_format,
    )
    turn = AssistantTurn()
    new_msg = True
    async for response in response_generator:
        turn.responses.append(response)
        response_message = response["message"]
        chunk: dict[str, Any] = {}
        if new_msg:
            new_msg = False
            chunk["role"] = "assistant"
        if (tool_calls := response_message.get("tool_calls")) is not None:
            chunk["tool_calls"] = [(call["function"]["name"], _parse_tool_args(call["function"]["arguments"])) for call in tool_calls]
        if (content := response_message.get("content")) is not None:
            chunk["content"] = content
        if (thinking := response_message.get("thinking")) is not None:
            chunk["thinking_content"] = thinking
        turn.deltas.append(chunk)
    return turn
