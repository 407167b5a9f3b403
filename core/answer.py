"""The answer as it streams: text after stop strings split into reasoning and content, tool calls
held back and parsed when the answer ends, and a forced call cut by max_tokens returned as the
call it was writing (never raw JSON as text)."""

from __future__ import annotations

import json
import re
import uuid

from core.reasoning import ReasoningSplitter
from core.tool_stream import ToolCallDetector
from core.tools import ToolPlan
from core.types import Event, ReasoningDelta, TextDelta, ToolCall, ToolCallEvent


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def split_text(text: str, splitter: ReasoningSplitter | None, detector: ToolCallDetector | None, final: bool) -> list[Event]:
    """Text after stop strings, split into reasoning and content; content a call holds back is not sent."""
    reasoning, content = splitter.feed(text) if splitter else ("", text)
    if final and splitter is not None:
        more_reasoning, more_content = splitter.flush()
        reasoning, content = reasoning + more_reasoning, content + more_content
    events: list[Event] = []
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    if detector is not None:
        content = detector.feed(content)
    if content:
        events.append(TextDelta(content))
    return events


def tool_events(detector: ToolCallDetector, plan: ToolPlan, cut: bool) -> list[Event]:
    rest, parsed = detector.finish()
    if parsed is not None:
        events: list[Event] = [TextDelta(parsed.content)] if parsed.content else []
        for index, call in enumerate(parsed.calls):
            arguments_json = json.dumps(call.arguments, ensure_ascii=False)
            events.append(ToolCallEvent(index, ToolCall(new_call_id(), call.name, call.arguments, arguments_json)))
        return events
    if plan.forced and cut:
        # A forced call cut by max_tokens is still a call: its partial arguments, never raw JSON as text.
        partial = partial_forced_call(rest, plan)
        return [ToolCallEvent(0, partial)] if partial else []
    return [TextDelta(rest)] if rest else []


_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)("?)')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*')


def partial_forced_call(text: str, plan: ToolPlan) -> ToolCall | None:
    """The call a forced answer cut short was writing: its name, and its arguments as far as written."""
    schema = plan.constraint.schema if plan.constraint else None
    options = schema.get("anyOf", [schema]) if isinstance(schema, dict) else []
    names = [option["properties"]["name"]["const"] for option in options if isinstance(option, dict)]
    match = _NAME.search(text)
    written = match.group(1) if match else ""
    candidates = [name for name in names if name == written] or [name for name in names if name.startswith(written)]
    if len(candidates) != 1:
        return None
    arguments = _ARGUMENTS.search(text)
    arguments_json = text[arguments.end() :] if arguments else ""
    return ToolCall(new_call_id(), candidates[0], {}, arguments_json, complete=False)


