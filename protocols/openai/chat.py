"""OpenAI chat/completions: the wire request to the core's input, and the core's events to
`chat.completion` objects and `chat.completion.chunk` streams (see voice-clients.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from core.generation import Generation
from core.tools import parse_arguments
from core.types import (
    Completion,
    Finish,
    GenerationInput,
    Message,
    NamedTool,
    OutputFormat,
    ReasoningDelta,
    Sampling,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    Usage,
)
from protocols.openai.schema import ChatCompletionRequest, ChatMessage, SamplingFields, StructuredOutputs
from protocols.tolerance import log_unknown_fields
from service.errors import InvalidRequestError

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
_ROLES = {"developer": "system", "function": "tool"}


def sampling_of(request: SamplingFields) -> Sampling:
    return Sampling(
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repeat_penalty=request.repeat_penalty,
    )


# ---- request -----------------------------------------------------------------------------------


def chat_input(request: ChatCompletionRequest) -> GenerationInput:
    log_unknown_fields(request, *request.messages)
    return GenerationInput(
        model=request.model,
        messages=_messages(request.messages),
        tools=_tools(request),
        tool_choice=_tool_choice(request),
        output=output_of(request),
        sampling=sampling_of(request),
        max_tokens=request.max_completion_tokens or request.max_tokens,
        stop=tuple(request.stop_list()),
        cache_key=request.user,
        priority=request.priority,
    )


def _messages(messages: list[ChatMessage]) -> tuple[Message, ...]:
    converted: list[Message] = []
    legacy_calls: dict[str, str] = {}  # function name -> id of its latest legacy call
    for index, message in enumerate(messages):
        role = _ROLES.get(message.role, message.role)
        calls = tuple(_call(call, index, position) for position, call in enumerate(message.tool_calls or []))
        if message.function_call is not None and not calls:
            # Legacy function calling: the assistant's call, answered by a `function` message.
            call = _call({"id": f"call_legacy_{index}", "function": message.function_call}, index, 0, "function_call")
            calls = (call,)
            legacy_calls[call.name] = call.id
        tool_call_id = message.tool_call_id
        if message.role == "tool" and not tool_call_id:
            raise InvalidRequestError(
                "a message with role 'tool' needs the tool_call_id of the call it answers", param=f"messages.{index}.tool_call_id"
            )
        if message.role == "function":
            tool_call_id = legacy_calls.get(message.name or "", tool_call_id)
        converted.append(
            Message(role, message.text(), calls, tool_call_id, message.name)  # type: ignore[arg-type]
        )
    return tuple(converted)


def _call(call: dict[str, Any], index: int, position: int, field: str = "tool_calls") -> ToolCall:
    function = call.get("function")
    param = f"messages.{index}.{field}"
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidRequestError("each tool call needs function.name", param=param)
    arguments = parse_arguments(function.get("arguments"), param, function["name"])
    call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{index}_{position}"
    return ToolCall(call_id, function["name"], arguments, json.dumps(arguments, ensure_ascii=False))


def _tools(request: ChatCompletionRequest) -> tuple[Tool, ...]:
    functions = [tool.function for tool in request.tools or []] + list(request.functions or [])
    return tuple(Tool(function.name, function.description, function.parameters) for function in functions)


def _tool_choice(request: ChatCompletionRequest) -> ToolChoice:
    choice: object = request.tool_choice if request.tool_choice is not None else request.function_call
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice  # type: ignore[return-value]
    data = choice.model_dump() if hasattr(choice, "model_dump") else choice
    function = data.get("function") if isinstance(data, dict) and isinstance(data.get("function"), dict) else data
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return NamedTool(function["name"])
    raise InvalidRequestError(
        'tool_choice must be none, auto, required or {"type": "function", "function": {"name": ...}}', param="tool_choice"
    )


def output_of(request: SamplingFields) -> OutputFormat | None:
    """The output constraint: `response_format` (OpenAI), `grammar` (llama.cpp's server) or
    `structured_outputs` (vLLM's); at most one of them."""
    given = [
        name for name, present in (
            ("response_format", request.response_format is not None and request.response_format.type != "text"),
            ("grammar", bool(request.grammar)),
            ("structured_outputs", request.structured_outputs is not None),
        ) if present
    ]
    if len(given) > 1:
        raise InvalidRequestError(f"send one of {' or '.join(given)}, not both", param=given[-1])
    if request.grammar:
        return OutputFormat("grammar", grammar=request.grammar)
    if request.structured_outputs is not None:
        return _structured_output(request.structured_outputs)
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return OutputFormat("json_object")
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise InvalidRequestError(
            "response_format type json_schema needs json_schema.schema", param="response_format.json_schema"
        )
    return OutputFormat("json_schema", spec.schema_, bool(spec.strict))


def _structured_output(structured: StructuredOutputs) -> OutputFormat:
    unsupported = [name for name, value in (structured.model_extra or {}).items() if value not in (None, False)]
    if unsupported:
        raise InvalidRequestError(
            f"structured_outputs.{unsupported[0]} is not supported here; use json, json_object or grammar",
            param=f"structured_outputs.{unsupported[0]}",
        )
    kinds = [name for name, value in (("json", structured.json_), ("json_object", structured.json_object), ("grammar", structured.grammar)) if value]
    if len(kinds) != 1:
        raise InvalidRequestError("structured_outputs needs exactly one of json, json_object or grammar", param="structured_outputs")
    if structured.grammar:
        return OutputFormat("grammar", grammar=structured.grammar)
    if structured.json_object:
        return OutputFormat("json_object")
    schema = structured.json_
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            raise InvalidRequestError("structured_outputs.json is not valid JSON", param="structured_outputs.json") from None
    if not isinstance(schema, dict):
        raise InvalidRequestError("structured_outputs.json must be a JSON schema object", param="structured_outputs.json")
    return OutputFormat("json_schema", schema)


# ---- response ----------------------------------------------------------------------------------


def usage_body(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def tool_call_entry(index: int, call: ToolCall) -> JSON:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json or json.dumps(call.arguments, ensure_ascii=False)},
    }


class ChatRenderer:
    """Shapes one generation's answer; `reasoning_field` names the field thinking goes to (None: dropped)."""

    def __init__(self, generation: Generation, reasoning_field: str | None) -> None:
        self._generation = generation
        self._reasoning_field = reasoning_field

    def _envelope(self, object_type: str) -> JSON:
        generation = self._generation
        return {"id": f"chatcmpl-{generation.id.removeprefix('gen-')}", "object": object_type, "created": generation.created, "model": generation.model}

    def whole(self, completion: Completion) -> JSON:
        message: JSON = {"role": "assistant", "content": completion.text}
        if completion.tool_calls:
            message["content"] = completion.text or None
            message["tool_calls"] = [tool_call_entry(index, call) for index, call in enumerate(completion.tool_calls)]
        if completion.reasoning and self._reasoning_field:
            message[self._reasoning_field] = completion.reasoning
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": completion.finish.reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": usage_body(completion.finish.usage)}

    def chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice]}

    async def stream(self, include_usage: bool) -> AsyncIterator[JSON]:
        yield self.chunk({"role": "assistant", "content": ""})
        async for event in self._generation:
            if isinstance(event, TextDelta):
                yield self.chunk({"content": event.text})
            elif isinstance(event, ReasoningDelta):
                if self._reasoning_field:
                    yield self.chunk({self._reasoning_field: event.text})
            elif isinstance(event, ToolCallEvent):
                # One call per chunk, each whole: clients that do not join fragments cope.
                yield self.chunk({"tool_calls": [tool_call_entry(event.index, event.call)]})
            elif isinstance(event, Finish):
                yield self.chunk({}, finish_reason=event.reason)
                if include_usage:
                    yield {**self._envelope("chat.completion.chunk"), "choices": [], "usage": usage_body(event.usage)}
