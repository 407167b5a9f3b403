"""Anthropic Messages request models (`POST /v1/messages` and `/v1/messages/count_tokens`).

Tolerant like Anthropic's own API towards what it does not use: unknown fields are accepted and
reported by `unknown_fields()` so the adapter can log them. Fields it does use are validated as
Anthropic validates them (max_tokens required, temperature 0 to 1, ...). Content blocks inside
messages are validated by the converter, block type by block type (see convert.py), so that its
400s name the exact block (`messages.2.content.1.input`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.stop_strings import check_stops


class Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class Cacheable(Tolerant):
    """A part that may carry Anthropic's prompt-cache marker. The prefix cache here is automatic,
    so the marker is accepted and has nothing to do."""

    cache_control: dict[str, Any] | None = None


# ---- content blocks (validated by the converter, one model per block type) -------------------


class TextBlock(Cacheable):
    type: Literal["text"]
    text: str
    citations: list[Any] | None = None


class ToolUseBlock(Cacheable):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]


class ToolResultBlock(Cacheable):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: str | list[dict[str, Any]] | None = None
    is_error: bool = False


class ThinkingBlock(Tolerant):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Tolerant):
    type: Literal["redacted_thinking"]
    data: str


class MediaBlock(Cacheable):
    """`image` and `document`: recognised so that they are refused with a clear message."""

    type: Literal["image", "document"]
    source: dict[str, Any] | None = None


# ---- the request ----------------------------------------------------------------------------


class InputMessage(Tolerant):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class ToolDefinition(Cacheable):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, value: Any) -> Any:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in (None, "custom"):
            raise ValueError(
                f"{kind!r} is a tool Anthropic runs on its own servers; this server runs only custom tools "
                "(no type, or type 'custom', with name and input_schema)"
            )
        return value


class ToolChoice(Tolerant):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_for_tool(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the name of the tool")
        return self


class Metadata(Tolerant):
    user_id: str | None = None


class JsonSchemaFormat(Tolerant):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Tolerant):
    format: JsonSchemaFormat | None = None
    effort: str | None = None  # accepted: this server has no effort setting


class MessagesInput(Tolerant):
    """What a message and a token count share: the conversation, the tools, the system prompt."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None  # accepted: a model thinks where its chat format lets it
    output_config: OutputConfig | None = None

    def system_text(self, separator: str) -> str:
        if self.system is None:
            return ""
        return self.system if isinstance(self.system, str) else separator.join(block.text for block in self.system)


Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class MessagesRequest(MessagesInput):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    metadata: Metadata | None = None
    service_tier: str | None = None  # accepted: one tier here

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        check_stops(value or [], "stop sequences")
        return value


class CountTokensRequest(MessagesInput):
    """`POST /v1/messages/count_tokens`: the same request without max_tokens and sampling."""
