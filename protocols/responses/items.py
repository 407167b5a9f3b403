"""Responses `input` items to the core's messages: `message` items (roles developer and system
become system), `function_call` items joined onto the assistant turn they belong to,
`function_call_output` items as tool results, and `reasoning` items as the thinking of the
assistant turn that follows. Each item is validated on its own, so a 400 names it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from core.tools import parse_arguments
from core.types import Message, ToolCall
from protocols.responses.schema import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
)
from protocols.tolerance import log_unknown_fields
from server.errors import describe_problems
from service.errors import InvalidRequestError

# Content parts that carry text, and the field that holds it.
TEXT_FIELDS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal", "reasoning_text": "text"}
MEDIA_PARTS = {"input_image": "image", "input_file": "file", "input_audio": "audio"}
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def part_text(part: ContentPart, param: str) -> str:
    if part.type in MEDIA_PARTS:
        raise InvalidRequestError(
            f"{param} is an {part.type} part, but no vision or audio model is loaded here: this server "
            f"reads text only. Send the {MEDIA_PARTS[part.type]} as text or leave it out.",
            param=param,
        )
    field_name = TEXT_FIELDS.get(part.type)
    if field_name is None:
        known = ", ".join(sorted(TEXT_FIELDS))
        raise InvalidRequestError(f"{param} has the content type {part.type!r}; this server reads {known}", param=param)
    text = getattr(part, field_name)
    if not isinstance(text, str):
        raise InvalidRequestError(f"{param} of type {part.type} needs its {field_name} text", param=f"{param}.{field_name}")
    return text


def content_text(content: str | list[ContentPart], param: str) -> str:
    if isinstance(content, str):
        return content
    return "".join(part_text(part, f"{param}.{index}") for index, part in enumerate(content))


@dataclass
class _Conversation:
    messages: list[Message] = field(default_factory=list)
    reasoning: str = ""  # thinking waiting for the assistant turn it came before

    def _take_reasoning(self) -> str:
        reasoning, self.reasoning = self.reasoning, ""
        return reasoning

    def message(self, item: MessageItem, param: str) -> None:
        text = content_text(item.content, f"{param}.content")
        role = _ROLES[item.role]
        reasoning = self._take_reasoning() if role == "assistant" else ""
        self.messages.append(Message(role, text, reasoning=reasoning))  # type: ignore[arg-type]

    def function_call(self, item: FunctionCallItem, param: str) -> None:
        arguments = parse_arguments(item.arguments, f"{param}.arguments", item.name)
        call = ToolCall(item.call_id, item.name, arguments, json.dumps(arguments, ensure_ascii=False))
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            # The calls of one answer follow its text: they are one assistant turn.
            self.messages[-1] = replace(last, tool_calls=(*last.tool_calls, call), reasoning=last.reasoning or self._take_reasoning())
        else:
            self.messages.append(Message("assistant", tool_calls=(call,), reasoning=self._take_reasoning()))

    def function_call_output(self, item: FunctionCallOutputItem, param: str) -> None:
        self.messages.append(Message("tool", content_text(item.output, f"{param}.output"), tool_call_id=item.call_id))

    def reasoning_item(self, item: ReasoningItem, param: str) -> None:
        self.reasoning += content_text(item.content or [], f"{param}.content")


_Handler = Callable[[_Conversation, Any, str], None]

ITEM_TYPES: dict[str, tuple[type[BaseModel], _Handler]] = {
    "message": (MessageItem, _Conversation.message),
    "function_call": (FunctionCallItem, _Conversation.function_call),
    "function_call_output": (FunctionCallOutputItem, _Conversation.function_call_output),
    "reasoning": (ReasoningItem, _Conversation.reasoning_item),
}


def _item(raw: dict[str, Any], index: int) -> tuple[BaseModel, _Handler, str]:
    param = f"input.{index}"
    kind = raw.get("type", "message")  # a bare {"role", "content"} is a message
    if kind not in ITEM_TYPES:
        known = ", ".join(ITEM_TYPES)
        raise InvalidRequestError(
            f"{param} is an item of type {kind!r}, which is not available here; this server takes {known} items",
            param=f"{param}.type",
        )
    model, handler = ITEM_TYPES[kind]
    try:
        item = model.model_validate(raw)
    except ValidationError as error:
        message, field_param = describe_problems(error.errors(include_url=False), ("input", index))
        raise InvalidRequestError(message, param=field_param) from None
    return item, handler, param


def input_messages(items: str | list[dict[str, Any]], earlier: Iterable[Message] = ()) -> tuple[Message, ...]:
    """The conversation `earlier` continued by the request's input (a string is one user message)."""
    if isinstance(items, str):
        return (*earlier, Message("user", items))
    conversation = _Conversation(list(earlier))
    for index, raw in enumerate(items):
        item, handler, param = _item(raw, index)
        log_unknown_fields(item)
        handler(conversation, item, param)
    return tuple(conversation.messages)
