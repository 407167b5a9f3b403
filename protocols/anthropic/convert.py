"""Anthropic Messages request -> the core's `GenerationInput`.

Each wire message becomes one or more core messages: a user message's `tool_result` blocks become
`tool` messages and its text a `user` message, in the order they came; an assistant message's
text, `tool_use` and `thinking` blocks become one assistant message with its calls and reasoning.
Blocks are validated here, by a registry of block types per role, so a 400 names the exact block."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from core.types import (
    GenerationInput,
    Message,
    NamedTool,
    OutputFormat,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
    WireNames,
)
from protocols.anthropic.render import OutputOptions
from protocols.anthropic.schema import (
    CountTokensRequest,
    MediaBlock,
    MessagesInput,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    Tolerant,
    ToolResultBlock,
    ToolUseBlock,
)
from protocols.tolerance import log_unknown_fields
from service.errors import InvalidRequestError

logger = logging.getLogger(__name__)

# Text blocks are paragraphs: a message's (or the system prompt's) text blocks join with a blank line.
BLOCK_SEPARATOR = "\n\n"
ERROR_RESULT_PREFIX = "Error: "  # how a tool_result with is_error reaches the model

NAMES = WireNames(
    messages="messages",
    tools="tools",
    tool_parameters="tools.{index}.input_schema",
    tool_choice="tool_choice",
    output="output_config.format",
    output_schema="output_config.format.schema",
    max_tokens="max_tokens",
)

_TOOL_CHOICES: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "none": "none"}


@dataclass(frozen=True)
class Converted:
    input: GenerationInput
    output: OutputOptions


def message_input(request: MessagesRequest) -> Converted:
    messages = conversation(request)
    choice = request.tool_choice
    thinking = request.thinking or {}
    options = OutputOptions(
        single_tool_use=bool(choice and choice.disable_parallel_tool_use),
        thinking=thinking.get("type") != "disabled",
    )
    sampling = Sampling(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k)
    generation_input = GenerationInput(
        model=request.model,
        messages=messages,
        tools=_tools(request),
        tool_choice=_tool_choice(request),
        output=_output(request),
        sampling=sampling,
        max_tokens=request.max_tokens,
        stop=tuple(request.stop_sequences or ()),
        cache_key=request.metadata.user_id if request.metadata else None,
        names=NAMES,
    )
    return Converted(generation_input, options)


def count_input(request: CountTokensRequest) -> GenerationInput:
    return GenerationInput(
        model=request.model,
        messages=conversation(request),
        tools=_tools(request),
        tool_choice=_tool_choice(request),
        output=_output(request),
        names=NAMES,
    )


def conversation(request: MessagesInput) -> tuple[Message, ...]:
    """The system prompt first (when there is one), then every wire message's core messages."""
    system_blocks = request.system if isinstance(request.system, list) else []
    log_unknown_fields(request, *request.messages, *(request.tools or ()), *system_blocks)
    last = len(request.messages) - 1
    if request.messages[last].role == "assistant":
        # Anthropic continues a final assistant turn ("prefill"); the chat templates here always
        # open a new turn, so the answer would not continue it. Refuse rather than mislead.
        raise InvalidRequestError(
            f"messages.{last}: the last message is from the assistant (a prefill), which this server "
            "cannot continue; end with a user message",
            param=f"messages.{last}",
        )
    system = request.system_text(BLOCK_SEPARATOR)
    converted: list[Message] = [Message("system", system)] if system else []
    call_ids: set[str] = set()
    for index, message in enumerate(request.messages):
        turn = _Turn(message.role, f"messages.{index}.content", call_ids)
        if isinstance(message.content, str):
            turn.text.append(message.content)
        else:
            for position, block in enumerate(message.content):
                turn.add(block, position)
        converted.extend(turn.messages())
    return tuple(converted)


# ---- blocks -------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """The core messages one wire message becomes."""

    role: str
    path: str
    call_ids: set[str]  # of every tool_use so far in the conversation
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    done: list[Message] = field(default_factory=list)

    def add(self, block: dict[str, Any], position: int) -> None:
        path = f"{self.path}.{position}"
        handlers = _BLOCKS[self.role]
        kind = block.get("type")
        if kind not in handlers:
            raise InvalidRequestError(f"{path}.type: {_unsupported(kind, self.role)}", param=f"{path}.type")
        model, handle = handlers[kind]
        handle(self, _validated(model, block, path), path)

    def flush_text(self) -> None:
        if self.text:
            self.done.append(Message("user", BLOCK_SEPARATOR.join(self.text)))
            self.text = []

    def messages(self) -> list[Message]:
        if self.role == "assistant":
            text = BLOCK_SEPARATOR.join(self.text)
            return [Message("assistant", text, tuple(self.calls), reasoning=BLOCK_SEPARATOR.join(self.reasoning))]
        self.flush_text()
        return self.done


def _text(turn: _Turn, block: TextBlock, path: str) -> None:
    turn.text.append(block.text)


def _tool_use(turn: _Turn, block: ToolUseBlock, path: str) -> None:
    turn.call_ids.add(block.id)
    turn.calls.append(ToolCall(block.id, block.name, block.input, json.dumps(block.input, ensure_ascii=False)))


def _tool_result(turn: _Turn, block: ToolResultBlock, path: str) -> None:
    if block.tool_use_id not in turn.call_ids:
        raise InvalidRequestError(
            f"{path}.tool_use_id: no tool_use block with id {block.tool_use_id!r} comes before this tool_result",
            param=f"{path}.tool_use_id",
        )
    turn.flush_text()  # a result answers the call it names; text before it stays before it
    content = _result_text(block, f"{path}.content")
    if block.is_error:
        content = ERROR_RESULT_PREFIX + content
    turn.done.append(Message("tool", content, tool_call_id=block.tool_use_id))


def _thinking(turn: _Turn, block: ThinkingBlock, path: str) -> None:
    turn.reasoning.append(block.thinking)


def _ignored(turn: _Turn, block: BaseModel, path: str) -> None:
    """redacted_thinking: encrypted for Anthropic's models; nothing here can read it."""


def _media(turn: _Turn, block: MediaBlock, path: str) -> None:
    _refuse_media(block.type, path)


def _refuse_media(kind: str, path: str) -> None:
    raise InvalidRequestError(
        f"{path}: {kind} blocks need a vision model, and the loaded model reads text only; "
        "send the content as text blocks",
        param=path,
    )


def _result_text(block: ToolResultBlock, path: str) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    texts = []
    for position, part in enumerate(block.content):
        part_path = f"{path}.{position}"
        if part.get("type") in _MEDIA:
            _refuse_media(str(part["type"]), part_path)
        if part.get("type") != "text":
            raise InvalidRequestError(
                f"{part_path}.type: a tool_result's content holds text blocks, not {part.get('type')!r}", param=f"{part_path}.type"
            )
        texts.append(_validated(TextBlock, part, part_path).text)
    return BLOCK_SEPARATOR.join(texts)


Handler = Callable[[_Turn, Any, str], None]

_MEDIA: dict[str, tuple[type[BaseModel], Handler]] = {kind: (MediaBlock, _media) for kind in ("image", "document")}
_BLOCKS: dict[str, dict[str, tuple[type[BaseModel], Handler]]] = {
    "user": {"text": (TextBlock, _text), "tool_result": (ToolResultBlock, _tool_result), **_MEDIA},
    "assistant": {
        "text": (TextBlock, _text),
        "tool_use": (ToolUseBlock, _tool_use),
        "thinking": (ThinkingBlock, _thinking),
        "redacted_thinking": (RedactedThinkingBlock, _ignored),
    },
}


def _unsupported(kind: object, role: str) -> str:
    other = "assistant" if role == "user" else "user"
    if kind in _BLOCKS[other]:
        return f"{kind} blocks belong in {other} messages, not {role} messages"
    return f"content block type {kind!r} is not supported in {role} messages; use one of {', '.join(sorted(_BLOCKS[role]))}"


def _validated(model: type[BaseModel], block: dict[str, Any], path: str) -> Any:
    try:
        parsed = model.model_validate(block)
    except ValidationError as error:
        problem = error.errors()[0]
        location = ".".join(str(part) for part in (path, *problem.get("loc", ())))
        raise InvalidRequestError(f"{location}: {problem.get('msg')}", param=location) from None
    if isinstance(parsed, Tolerant):
        log_unknown_fields(parsed)
    return parsed


# ---- tools and output -----------------------------------------------------------------------


def _tools(request: MessagesInput) -> tuple[Tool, ...]:
    return tuple(Tool(tool.name, tool.description, tool.input_schema) for tool in request.tools or ())


def _tool_choice(request: MessagesInput) -> ToolChoice:
    choice = request.tool_choice
    if choice is None:
        return "auto"
    if choice.type == "any" and not request.tools:
        raise InvalidRequestError("tool_choice: type 'any' needs tools to choose from; send tools", param="tool_choice")
    if choice.type == "tool":
        return NamedTool(choice.name or "")
    return _TOOL_CHOICES[choice.type]


def _output(request: MessagesInput) -> OutputFormat | None:
    config = request.output_config
    if config is None or config.format is None:
        return None
    # Anthropic's structured outputs always hold to the schema: strict.
    return OutputFormat("json_schema", config.format.schema_, strict=True)
