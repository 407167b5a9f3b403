"""OpenAI Responses request models. Tolerant like the chat models: fields this server does not
use are accepted and logged. `input` items are kept as plain objects here and validated one by
one in `items.py`, so that an error names the item (`input.3.call_id`), not a union branch."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocols.openai.schema import Probability
from protocols.openai.schema import _Tolerant as Tolerant

# ---- input items ---------------------------------------------------------------------------------


class ContentPart(Tolerant):
    """One part of a message's content (`input_text`, `output_text`, `refusal`, `input_image` ...)."""

    type: str
    text: str | None = None
    refusal: str | None = None


class MessageItem(Tolerant):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Tolerant):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    arguments: str  # JSON text
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Tolerant):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ReasoningItem(Tolerant):
    """Earlier thinking sent back; its text (if any) goes with the assistant turn that follows."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ContentPart] = Field(default_factory=list)
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None
    status: str | None = None


# ---- tools and output format ---------------------------------------------------------------------


class ToolSpec(Tolerant):
    """A tool as sent; only `function` tools run here, which the converter checks."""

    type: str
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceObject(Tolerant):
    type: str
    name: str | None = None


class TextFormat(Tolerant):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(Tolerant):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Tolerant):
    effort: str | None = None
    summary: str | None = None


# ---- the request ------------------------------------------------------------------------------------


class ResponsesRequest(Tolerant):
    model: str | None = None
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    stream: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    service_tier: str | None = None
    background: bool | None = None
    # OpenAI-hosted state this server does not have: refused with a 400 naming the field.
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
