"""The core's events -> Anthropic Messages: the stream's events (`message_start`, content blocks,
`message_delta`, `message_stop`), and the whole message as those same events add up, so that a
streamed and a whole answer are built by one piece of code and cannot disagree.

A new content block starts whenever the kind of output changes (thinking, text, a tool call).
Each tool call is one `tool_use` block whose input arrives whole in one `input_json_delta`:
the core detects a call once it is complete. No text follows a tool_use block, as in Anthropic's
answers. No `ping` events are sent: tokens keep the connection busy, and the core sends nothing
before the first one is ready."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.generation import Generation
from core.types import Event, Finish, ReasoningDelta, TextDelta, ToolCall, ToolCallEvent, Usage

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

# How each kind of block starts, empty.
_EMPTY_BLOCKS: dict[str, JSON] = {
    "text": {"type": "text", "text": ""},
    # Anthropic signs its thinking so that it can check it when sent back; nothing here checks it,
    # and the SDK's ThinkingBlock needs the field.
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def tool_use_id(call: ToolCall) -> str:
    return f"toolu_{call.id.removeprefix('call_')}"


def stop_reason(finish: Finish) -> str:
    return "stop_sequence" if finish.stop_sequence is not None else STOP_REASONS[finish.reason]


def usage_body(usage: Usage) -> JSON:
    """Anthropic counts input in parts that add up: read from the cache, and the rest. The prefix
    cache here fills itself, so nothing is reported as written to it by request."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


@dataclass(frozen=True)
class OutputOptions:
    """What the request asked of the answer's content blocks."""

    single_tool_use: bool = False  # tool_choice.disable_parallel_tool_use: at most one tool_use block
    thinking: bool = True  # thinking blocks, unless the request's `thinking` says disabled


class _Blocks:
    """Turns content events into content block events, with increasing indexes."""

    def __init__(self, options: OutputOptions) -> None:
        self._index = -1
        self._open: str | None = None  # the type of the block still open
        self._tool_uses = 0
        self._options = options

    def feed(self, event: Event) -> list[JSON]:
        return _FEEDERS[type(event)](self, event)

    def close(self) -> list[JSON]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]

    def _start(self, block: JSON) -> JSON:
        self._index += 1
        self._open = block["type"]
        return {"type": "content_block_start", "index": self._index, "content_block": copy.deepcopy(block)}

    def _delta(self, delta: JSON) -> JSON:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _continue(self, kind: str) -> list[JSON]:
        """Events that leave a block of `kind` open: none if it is, else close and start one."""
        return [] if self._open == kind else [*self.close(), self._start(_EMPTY_BLOCKS[kind])]

    def _text(self, event: TextDelta) -> list[JSON]:
        if self._tool_uses:
            logger.debug("text after a tool call dropped: %r", event.text)
            return []
        return [*self._continue("text"), self._delta({"type": "text_delta", "text": event.text})]

    def _thinking(self, event: ReasoningDelta) -> list[JSON]:
        if not self._options.thinking:
            return []
        return [*self._continue("thinking"), self._delta({"type": "thinking_delta", "thinking": event.text})]

    def _tool_use(self, event: ToolCallEvent) -> list[JSON]:
        if self._options.single_tool_use and self._tool_uses:
            logger.info("tool call %r dropped: the request disabled parallel tool use", event.call.name)
            return []
        self._tool_uses += 1
        call = event.call
        arguments = call.arguments_json or json.dumps(call.arguments, ensure_ascii=False)
        events = self.close()
        events.append(self._start({"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}))
        events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events + self.close()


_FEEDERS: dict[type, Callable[[_Blocks, Any], list[JSON]]] = {
    TextDelta: _Blocks._text,
    ReasoningDelta: _Blocks._thinking,
    ToolCallEvent: _Blocks._tool_use,
}


class MessageRenderer:
    """One generation as an Anthropic message: streamed as events, or whole."""

    def __init__(self, generation: Generation, options: OutputOptions) -> None:
        self._generation = generation
        self._options = options

    def _start(self) -> JSON:
        generation = self._generation
        prompt_tokens = generation.prepared.prompt_tokens
        message = {
            "id": f"msg_{generation.id.removeprefix('gen-')}",
            "type": "message",
            "role": "assistant",
            "model": generation.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # What the cache held is known at the end; message_delta corrects the split.
            "usage": usage_body(Usage(prompt_tokens, 0)),
        }
        return {"type": "message_start", "message": message}

    async def events(self) -> AsyncIterator[JSON]:
        try:
            yield self._start()
            blocks = _Blocks(self._options)
            async for event in self._generation:
                if not isinstance(event, Finish):
                    for block_event in blocks.feed(event):
                        yield block_event
                    continue
                for block_event in blocks.close():
                    yield block_event
                yield {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(event), "stop_sequence": event.stop_sequence},
                    "usage": usage_body(event.usage),
                }
                yield {"type": "message_stop"}
        finally:
            await self._generation.aclose()  # also when the client leaves mid-stream: free the slot now

    async def whole(self) -> JSON:
        return accumulate([event async for event in self.events()])


class _Accumulator:
    """Adds stream events up to the message they describe (what Anthropic's SDKs do)."""

    def __init__(self) -> None:
        self.message: JSON = {}
        self._json: dict[int, list[str]] = {}  # tool input text by block index

    def message_start(self, event: JSON) -> None:
        self.message = copy.deepcopy(event["message"])

    def content_block_start(self, event: JSON) -> None:
        self.message["content"].append(copy.deepcopy(event["content_block"]))

    def content_block_delta(self, event: JSON) -> None:
        delta = event["delta"]
        if delta["type"] == "input_json_delta":
            self._json.setdefault(event["index"], []).append(delta["partial_json"])
            return
        field = _DELTA_FIELDS[delta["type"]]
        self.message["content"][event["index"]][field] += delta[field]

    def content_block_stop(self, event: JSON) -> None:
        block = self.message["content"][event["index"]]
        if block["type"] == "tool_use":
            block["input"] = _tool_input("".join(self._json.pop(event["index"], [])))

    def message_delta(self, event: JSON) -> None:
        self.message.update(event["delta"])
        self.message["usage"].update(event["usage"])

    def message_stop(self, event: JSON) -> None:
        pass


_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking"}


def _tool_input(text: str) -> JSON:
    """A call's input object; a call cut short by max_tokens has only part of it, and gets {}."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def accumulate(events: Iterable[JSON]) -> JSON:
    accumulator = _Accumulator()
    for event in events:
        getattr(accumulator, event["type"])(event)
    return accumulator.message
