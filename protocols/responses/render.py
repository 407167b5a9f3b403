"""The core's events to a Responses `response` object and its typed stream events.

One state machine serves both: a streamed response sends every event it makes, a whole response
runs the same machine and returns the final object. Output items follow the events: reasoning
text opens a `reasoning` item, answer text a `message` item, each tool call is one
`function_call` item; an item closes when the next kind starts or the answer ends. Every event
carries `sequence_number` 0, 1, 2 ... and the stream ends with `response.completed`,
`response.incomplete` (max_output_tokens) or, on a failure after it started, `error` and
`response.failed`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from core.generation import Generation
from core.types import (
    Event,
    Finish,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from server.errors import ErrorDetail
from server.sse import named_event

JSON = dict[str, Any]
FinishHook = Callable[[JSON, Message], None]

# The `code` of a failed response's error (OpenAI's ResponseError codes) by HTTP status.
FAILURE_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class TextKind:
    """A kind of streamed text and the output item it fills."""

    item_type: str
    id_prefix: str
    part_type: str
    delta_event: str
    done_event: str
    logprobs: bool  # output_text parts and events carry (empty) logprobs

    def part(self, text: str) -> JSON:
        part: JSON = {"type": self.part_type, "text": text}
        if self.logprobs:
            part.update(annotations=[], logprobs=[])
        return part

    def item(self, item_id: str, status: str, parts: list[JSON]) -> JSON:
        if self.item_type == "message":
            return {"id": item_id, "type": "message", "status": status, "content": parts, "role": "assistant"}
        return {"id": item_id, "type": "reasoning", "summary": [], "content": parts, "status": status}


MESSAGE = TextKind("message", "msg", "output_text", "response.output_text.delta", "response.output_text.done", True)
REASONING = TextKind("reasoning", "rs", "reasoning_text", "response.reasoning_text.delta", "response.reasoning_text.done", False)
TEXT_KINDS: dict[type, TextKind] = {TextDelta: MESSAGE, ReasoningDelta: REASONING}


@dataclass
class _OpenItem:
    kind: TextKind
    id: str
    index: int
    text: list[str] = field(default_factory=list)

    def wire(self, status: str) -> JSON:
        return self.kind.item(self.id, status, [self.kind.part("".join(self.text))] if status != "in_progress" else [])


def usage_body(usage: Usage) -> JSON:
    return {
        "input_tokens": usage.prompt_tokens,
        # Every prompt token not read from the prompt cache is computed into it.
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.prompt_tokens - usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def call_item(item_id: str, call: ToolCall, status: str, arguments: str) -> JSON:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments, "call_id": call.id, "name": call.name}


class ResponseRenderer:
    """`echo`: the request fields a response repeats (see `request.echo_fields`); `on_finish` gets
    the final object and the assistant turn it adds to the conversation."""

    def __init__(self, response_id: str, model: str, echo: JSON, on_finish: FinishHook | None = None) -> None:
        self.id = response_id
        self.created_at = int(time.time())
        self._model = model
        self._echo = echo
        self._on_finish = on_finish
        self._sequence = 0
        self._items: list[JSON] = []  # closed output items
        self._open: _OpenItem | None = None
        self._texts: dict[TextKind, list[str]] = {MESSAGE: [], REASONING: []}
        self._calls: list[ToolCall] = []
        self.final: JSON | None = None

    # ---- the response object ----------------------------------------------------------------

    def body(self, status: str, **fields: Any) -> JSON:
        output = [*self._items, self._open.wire("incomplete")] if self._open and status == "failed" else list(self._items)
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": fields.get("completed_at"),
            "error": fields.get("error"),
            "incomplete_details": fields.get("incomplete_details"),
            "model": self._model,
            "output": output,
            **self._echo,
            "usage": fields.get("usage"),
        }

    # ---- events -------------------------------------------------------------------------------

    def _event(self, event_type: str, **fields: Any) -> JSON:
        payload = {"type": event_type, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return payload

    async def events(self, generation: Generation) -> AsyncIterator[JSON]:
        try:
            yield self._event("response.created", response=self.body("in_progress"))
            yield self._event("response.in_progress", response=self.body("in_progress"))
            async for event in generation:
                for payload in self._on(event):
                    yield payload
        finally:
            await generation.aclose()  # at once, also when the client went away mid-stream

    async def whole(self, generation: Generation) -> JSON:
        async for _ in self.events(generation):
            pass
        if self.final is None:
            raise RuntimeError("the generation ended without a finish")
        return self.final

    def _on(self, event: Event) -> list[JSON]:
        if isinstance(event, TextDelta | ReasoningDelta):
            return self._text(TEXT_KINDS[type(event)], event.text)
        if isinstance(event, ToolCallEvent):
            return [*self._close("completed"), *self._call(event.call)]
        return self._finish(event)

    def _text(self, kind: TextKind, text: str) -> list[JSON]:
        if kind is MESSAGE and self._calls:
            raise RuntimeError("the core sent answer text after a tool call")
        events: list[JSON] = []
        if self._open is None or self._open.kind is not kind:
            events += [*self._close("completed"), *self._start(kind)]
        assert self._open is not None
        self._open.text.append(text)
        self._texts[kind].append(text)
        extra = {"logprobs": []} if kind.logprobs else {}
        events.append(self._event(kind.delta_event, item_id=self._open.id, output_index=self._open.index, content_index=0, delta=text, **extra))
        return events

    def _start(self, kind: TextKind) -> list[JSON]:
        item = self._open = _OpenItem(kind, new_id(kind.id_prefix), len(self._items))
        where = {"item_id": item.id, "output_index": item.index}
        return [
            self._event("response.output_item.added", output_index=item.index, item=item.wire("in_progress")),
            self._event("response.content_part.added", **where, content_index=0, part=kind.part("")),
        ]

    def _close(self, status: str) -> list[JSON]:
        item, self._open = self._open, None
        if item is None:
            return []
        text = "".join(item.text)
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        extra = {"logprobs": []} if item.kind.logprobs else {}
        wire = item.wire(status)
        self._items.append(wire)
        return [
            self._event(item.kind.done_event, **where, text=text, **extra),
            self._event("response.content_part.done", **where, part=item.kind.part(text)),
            self._event("response.output_item.done", output_index=item.index, item=wire),
        ]

    def _call(self, call: ToolCall) -> list[JSON]:
        item_id, index = new_id("fc"), len(self._items)
        arguments = call.arguments_json or (json.dumps(call.arguments, ensure_ascii=False) if call.complete else "")
        done = call_item(item_id, call, "completed" if call.complete else "incomplete", arguments)
        self._items.append(done)
        self._calls.append(call)
        where = {"item_id": item_id, "output_index": index}
        events = [self._event("response.output_item.added", output_index=index, item=call_item(item_id, call, "in_progress", ""))]
        if arguments:
            events.append(self._event("response.function_call_arguments.delta", **where, delta=arguments))
        events += [
            self._event("response.function_call_arguments.done", **where, name=call.name, arguments=arguments),
            self._event("response.output_item.done", output_index=index, item=done),
        ]
        return events

    def _finish(self, finish: Finish) -> list[JSON]:
        cut = finish.reason == "length"
        status = "incomplete" if cut else "completed"
        events = self._close(status)
        if not self._items:  # an answer always has a message, if only an empty one
            events += [*self._start(MESSAGE), *self._close(status)]
        self.final = self.body(
            status,
            usage=usage_body(finish.usage),
            incomplete_details={"reason": "max_output_tokens"} if cut else None,
            completed_at=None if cut else int(time.time()),
        )
        if self._on_finish is not None:
            turn = Message("assistant", "".join(self._texts[MESSAGE]), tuple(self._calls), reasoning="".join(self._texts[REASONING]))
            self._on_finish(self.final, turn)
        events.append(self._event(f"response.{status}", response=self.final))
        return events

    # ---- failure after the stream started ------------------------------------------------------

    def failure(self, detail: ErrorDetail) -> bytes:
        """The events that end a stream which failed: `error`, then `response.failed` (the
        terminal event, with the output so far)."""
        code = FAILURE_CODES.get(detail.status, "server_error")
        error_event = self._event("error", code=detail.code or code, message=detail.message, param=detail.param)
        failed = self.body("failed", error={"code": code, "message": detail.message})
        return named_event(error_event) + named_event(self._event("response.failed", response=failed))
