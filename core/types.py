"""The internal request and event types. Protocol adapters build a `GenerationInput` from their
wire request and render the `Event`s back into their wire format; nothing here knows a protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    # The arguments as JSON text. Equal to json.dumps(arguments) for a whole call; for a call cut by
    # max_tokens it is the partial text the model wrote, and `arguments` is {}.
    arguments_json: str = ""
    complete: bool = True


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on a tool result: the call it answers
    name: str | None = None  # the speaker's name, or on a tool result the tool's name
    reasoning: str = ""  # an assistant's earlier thinking, where a protocol sends it back


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class NamedTool:
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


@dataclass(frozen=True)
class OutputFormat:
    """A constraint on the whole answer: any JSON object, a JSON schema, or a GBNF grammar."""

    kind: Literal["json_object", "json_schema", "grammar"]
    schema: dict[str, Any] | None = None
    strict: bool = False
    grammar: str | None = None


@dataclass(frozen=True)
class Sampling:
    """Sampling fields as the client sent them; None = the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None


@dataclass(frozen=True)
class WireNames:
    """How a protocol names the request fields the core reports errors about."""

    messages: str = "messages"
    tools: str = "tools"
    tool_parameters: str = "tools.{index}.function.parameters"
    tool_choice: str = "tool_choice"
    output: str = "response_format"
    output_schema: str = "response_format.json_schema.schema"
    max_tokens: str = "max_tokens"
    grammar: str = "grammar"


@dataclass(frozen=True)
class GenerationInput:
    """One request for text, from any protocol: a chat (`messages`) or a raw `prompt`."""

    model: str | None
    messages: tuple[Message, ...] = ()
    prompt: str | None = None  # raw text, sent to the model as is (no chat template)
    prompt_ids: tuple[int, ...] | None = None  # a raw prompt given as token ids (vLLM's completions)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    output: OutputFormat | None = None
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    cache_key: str | None = None  # keeps a conversation's prompt cache together (OpenAI `user`)
    priority: int | None = None  # higher is served first; None = the model's default
    warm: bool = False  # a warm prompt prefilled at load: its cached prefix is counted as "warm"
    names: WireNames = field(default_factory=WireNames)


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallEvent:
    index: int
    call: ToolCall


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # Of completion_tokens, those whose text went to reasoning (counted per engine step, so the
    # reasoning markers themselves are not counted).
    reasoning_tokens: int = 0
    # Measured, in seconds: until the first token, and from it to the last.
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    load_seconds: float = 0.0  # the model load this request waited for

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None  # the client's stop string that ended the answer


Event = TextDelta | ReasoningDelta | ToolCallEvent | Finish


@dataclass(frozen=True)
class Completion:
    """A whole answer: what the events of one generation add up to."""

    text: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    finish: Finish
