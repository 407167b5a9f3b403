"""Ollama request models (api/types.go and the `ollama` client's _types.py). Tolerant: fields this
server does not use are accepted and reported by `unknown_fields()` so the adapter can log them;
fields it uses are validated, and an error names the field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.stop_strings import check_stops

Think = bool | Literal["low", "medium", "high", "max"]
# "" or absent: free text; "json": any JSON value; an object: a JSON schema.
Format = Literal["", "json"] | dict[str, Any]
# A Go duration ("5m", "300s", "-1") or a number of seconds; negative keeps the model loaded.
KeepAlive = float | str


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class Options(_Tolerant):
    """The runtime options this server honours; the others (mirostat, num_gpu, ...) are logged."""

    temperature: Annotated[float, Field(ge=0.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    seed: int | None = None  # negative: random, as Ollama's default -1
    num_predict: int | None = None  # -1 / -2 / 0: no limit of the request's own
    stop: str | list[str] | None = None
    num_ctx: Annotated[int, Field(ge=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0)] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        check_stops([value] if isinstance(value, str) else value or [])
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ToolCallFunction(_Tolerant):
    name: Annotated[str, Field(min_length=1)]
    arguments: dict[str, Any] | str | None = None
    index: int | None = None


class ToolCall(_Tolerant):
    id: str | None = None
    function: ToolCallFunction


class ChatMessage(_Tolerant):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # on a tool result: the tool that ran
    tool_call_id: str | None = None  # on a tool result: the call it answers


class ToolFunction(_Tolerant):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Tolerant):
    type: Literal["function"] = "function"
    function: ToolFunction


class _Generating(_Tolerant):
    model: str = ""
    stream: bool = True
    format: Format | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    think: Think | None = None
    logprobs: bool | None = None
    images: list[Any] | None = None


class ChatRequest(_Generating):
    messages: list[ChatMessage] = []
    tools: list[ToolDefinition] | None = None


class GenerateRequest(_Generating):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False


class EmbedRequest(_Tolerant):
    model: str = ""
    input: str | list[str] = ""
    truncate: bool | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class EmbeddingsRequest(_Tolerant):
    """The legacy /api/embeddings: one prompt, one vector."""

    model: str = ""
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class ModelRequest(_Tolerant):
    """/api/show, /api/pull and the model-management routes; `name` is the older spelling of `model`."""

    model: str = ""
    name: str = ""
    stream: bool = True
    verbose: bool = False

    @property
    def model_name(self) -> str:
        return self.model or self.name
