"""Ollama /api/chat: the wire request to the core's input, and the core's events to NDJSON lines
or one whole answer, in Ollama's shapes (message.content, message.thinking, whole
message.tool_calls with arguments as objects, a last line with done: true and the durations)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from core.tools import parse_arguments
from core.types import (
    Completion,
    Finish,
    GenerationInput,
    Message,
    NamedTool,
    OutputFormat,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
)
from protocols.ollama.schema import ChatMessage, ChatRequest, Format, ToolDefinition
from protocols.ollama.wire import OLLAMA_NAMES, LineRenderer, max_tokens_of, sampling_of, timestamp
from protocols.tolerance import log_unknown_fields
from service.errors import InvalidRequestError

logger = logging.getLogger(__name__)

JSON = dict[str, Any]


# ---- request -----------------------------------------------------------------------------------


def chat_input(request: ChatRequest, alias: str) -> GenerationInput:
    log_unknown_fields(request, request.options, *request.messages)
    tools = _tools(request.tools or [])
    forced = forced_call(request.format, tools)
    return GenerationInput(
        model=alias,
        messages=_messages(request.messages),
        tools=tools,
        tool_choice=forced or "auto",
        output=None if forced else output_of(request.format),
        sampling=sampling_of(request.options),
        max_tokens=max_tokens_of(request.options),
        stop=tuple(request.options.stop_list()) if request.options else (),
        names=OLLAMA_NAMES,
    )


def output_of(format: Format | None) -> OutputFormat | None:
    if format is None or format == "":
        return None
    if format == "json":
        return OutputFormat("json_object")
    return OutputFormat("json_schema", format)


def forced_call(format: Format | None, tools: tuple[Tool, ...]) -> ToolChoice | None:
    """Ollama has no tool_choice. A `format` that is the schema of a call to the request's tools,
    `{"name": {"const": <a tool>} or {"enum": <every tool>}, "arguments": ...}`, asks for exactly
    that answer: it becomes a forced call, so the answer arrives as message.tool_calls whatever
    the chat format's call syntax, with arguments constrained by the tool's own parameters."""
    if not isinstance(format, dict) or not tools:
        return None
    properties = format.get("properties")
    if not isinstance(properties, dict) or set(properties) != {"name", "arguments"} or not isinstance(properties["name"], dict):
        return None
    names = {tool.name for tool in tools}
    const, enum = properties["name"].get("const"), properties["name"].get("enum")
    if isinstance(const, str) and const in names:
        return NamedTool(const)
    if isinstance(enum, list) and set(enum) == names:
        return NamedTool(enum[0]) if len(names) == 1 else "required"
    return None


def _tools(tools: list[ToolDefinition]) -> tuple[Tool, ...]:
    return tuple(Tool(tool.function.name, tool.function.description, tool.function.parameters) for tool in tools)


def _messages(messages: list[ChatMessage]) -> tuple[Message, ...]:
    """Ollama messages as the core's. A tool result names its tool (`tool_name`) or its call
    (`tool_call_id`), or neither (Home Assistant sends neither): it then answers the earliest
    call of the last assistant message that has no result yet."""
    converted: list[Message] = []
    pending: list[ToolCall] = []
    for index, message in enumerate(messages):
        if message.images:
            raise InvalidRequestError(
                "this server has no vision model loaded, so it cannot read images; send the message without images",
                param=f"messages.{index}.images",
            )
        calls = tuple(_call(call.function.name, call.function.arguments, call.id, index, position) for position, call in enumerate(message.tool_calls or []))
        if message.role == "assistant":
            pending = list(calls)
        tool_call_id, name = message.tool_call_id, message.tool_name
        if message.role == "tool":
            answered = next((call for call in pending if call.id == tool_call_id or (tool_call_id is None and call.name == name)), None)
            if answered is None and tool_call_id is None and name is None and pending:
                answered = pending[0]
            if answered is not None:
                pending.remove(answered)
                tool_call_id, name = tool_call_id or answered.id, name or answered.name
        converted.append(Message(message.role, message.content or "", calls, tool_call_id, name, message.thinking or ""))
    return tuple(converted)


def _call(name: str, arguments: object, call_id: str | None, index: int, position: int) -> ToolCall:
    parsed = parse_arguments(arguments, f"messages.{index}.tool_calls.{position}.function.arguments", name)
    return ToolCall(call_id or f"call_{index}_{position}", name, parsed)


# ---- response ----------------------------------------------------------------------------------


def tool_call_entry(index: int, call: ToolCall) -> JSON:
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments}}


class ChatRenderer(LineRenderer):
    """Shapes one generation as Ollama chat lines. `model` is the name the client asked for (Ollama
    echoes it); thinking is sent in message.thinking when `think` is on, else left out."""

    def line(self, message: JSON, **fields: Any) -> JSON:
        return {"model": self._model, "created_at": timestamp(), "message": {"role": "assistant", "content": "", **message}, "done": False, **fields}

    def whole(self, completion: Completion) -> JSON:
        message: JSON = {"content": completion.text}
        if completion.reasoning and self._think:
            message["thinking"] = completion.reasoning
        calls = [tool_call_entry(index, call) for index, call in enumerate(completion.tool_calls) if _whole(call)]
        if calls:
            message["tool_calls"] = calls
        return self.line(message, **self._done(completion.finish))

    async def stream(self) -> AsyncIterator[JSON]:
        async for event in self._generation:
            if isinstance(event, TextDelta):
                yield self.line({"content": event.text})
            elif isinstance(event, ReasoningDelta):
                if self._think:
                    yield self.line({"thinking": event.text})
            elif isinstance(event, ToolCallEvent):
                if _whole(event.call):
                    yield self.line({"tool_calls": [tool_call_entry(event.index, event.call)]})
            elif isinstance(event, Finish):
                yield self.line({}, **self._done(event))


def _whole(call: ToolCall) -> bool:
    """Ollama sends only whole calls with object arguments: a forced call cut short by
    num_predict is left out, and done_reason says length."""
    if not call.complete:
        logger.info("tool call %s to %s was cut short by num_predict: not sent", call.id, call.name)
    return call.complete
