"""OpenAI request models (chat, completions, embeddings, /tokenize). Tolerant: fields we do not
use are accepted and reported by `unknown_fields()` so the adapter can log them; fields we do use
are validated strictly."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.stop_strings import check_stops

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class TextPart(_Tolerant):
    type: Literal["text"]
    text: str


class ChatMessage(_Tolerant):
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None  # legacy: an assistant's call, answered by role function

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(_Tolerant):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Tolerant):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Tolerant):
    name: str


class NamedToolChoice(_Tolerant):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(_Tolerant):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Tolerant):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Tolerant):
    """vLLM's `structured_outputs`: a JSON schema (`json`, an object or its JSON text), any JSON
    object (`json_object`), or a GBNF `grammar`."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    json_object: bool | None = None
    grammar: str | None = None


class StreamOptions(_Tolerant):
    include_usage: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingFields(_Tolerant):
    """Fields shared by chat and text completions."""

    model: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Probability | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | list[str] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0)] | None = None
    n: Annotated[int, Field(ge=1, le=1, description="only n=1 is supported")] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    priority: int | None = None  # higher is served first (voice before background work)
    response_format: ResponseFormat | None = None
    grammar: str | None = None  # llama.cpp server's GBNF field
    structured_outputs: StructuredOutputs | None = None  # vLLM's field

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        check_stops([value] if isinstance(value, str) else value or [])
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: Literal[False] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Legacy function calling, mapped onto tools.
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | FunctionName | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    """`prompt`: text, or token ids (as vLLM takes them); a list holding one of either."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=1)]
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None
    suffix: None = None

    def prompt_text(self) -> str | None:
        """The prompt as text, or None when it came as token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return prompt
        return prompt[0] if isinstance(prompt[0], str) else None

    def prompt_ids(self) -> tuple[int, ...] | None:
        prompt = self.prompt
        if isinstance(prompt, str) or isinstance(prompt[0], str):
            return None
        return tuple(prompt[0]) if isinstance(prompt[0], list) else tuple(prompt)  # type: ignore[arg-type]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Tolerant):
    """`input`: a string, a list of strings, a list of token ids, or a list of such lists."""

    model: str | None = None
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def inputs(self) -> list[str] | list[list[int]]:
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]


class TokenizeRequest(_Tolerant):
    """`POST /tokenize`, in vLLM's shape: a raw `prompt`, or chat `messages` (and `tools`)
    rendered by the model's chat format with the generation prompt, exactly as a chat request."""

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    tools: list[ToolDefinition] | None = None
    # For a raw prompt: add BOS where the model expects it (vLLM's field), and tokenize special-token
    # text as plain text (the name of Hugging Face tokenizers' option).
    add_special_tokens: bool = True
    split_special_tokens: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt (text) or messages (a chat)")
        return self


class DetokenizeRequest(_Tolerant):
    """`POST /detokenize`, in vLLM's shape."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]
