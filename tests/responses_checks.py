"""Strict checks of OpenAI Responses payloads, shared by the fast and the live tests: every event
and item validated against the `openai` SDK's own types, and the order of a stream's events."""

from __future__ import annotations

import json
import typing
from typing import Any

import httpx
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
    ResponseStreamEvent,
)

_UNION = typing.get_args(typing.get_args(ResponseStreamEvent)[0])
EVENT_TYPES: dict[str, type] = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls for cls in _UNION}
ITEM_TYPES: dict[str, type] = {"message": ResponseOutputMessage, "function_call": ResponseFunctionToolCall, "reasoning": ResponseReasoningItem}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def check_response(body: dict[str, Any]) -> None:
    """A response object with OpenAI's shape, its items each of their own type."""
    Response.model_validate(body)
    assert body["object"] == "response" and body["id"].startswith("resp_")
    for item in body["output"]:
        ITEM_TYPES[item["type"]].model_validate(item)


def named_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse a Responses stream strictly: `event: <type>` and `data: <json>` per event, nothing else."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    body = response.text
    assert body.endswith("\n\n"), "the stream was cut off"
    events = []
    for block in body.split("\n\n")[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), f"not an event: {block!r}"
        payload = json.loads(lines[1][len("data: ") :])
        assert payload["type"] == lines[0][len("event: ") :]
        events.append(payload)
    check_stream(events)
    return events


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fails on a missing or non-increasing sequence_number, an event not of OpenAI's shape, an
    item event outside its item's added/done, a stream without its terminal event, or answer
    text after a tool call. Returns the terminal event's response."""
    assert events, "an empty stream"
    numbers = [event.get("sequence_number") for event in events]
    assert numbers == list(range(len(events))), f"sequence_number must count 0, 1, 2 ...: {numbers}"
    for event in events:
        assert event["type"] in EVENT_TYPES, f"unknown event type {event['type']!r}"
        EVENT_TYPES[event["type"]].model_validate(event)
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in TERMINAL, f"the stream ends without a terminal event: {events[-1]['type']}"
    assert not any(event["type"] in TERMINAL for event in events[:-1]), "a terminal event before the end"
    assert len({event["response"]["id"] for event in events if "response" in event}) == 1
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    texts: dict[int, str] = {}
    call_started = False
    for event in events[2:-1]:
        kind = event["type"]
        if kind == "error":
            continue
        index = event["output_index"]
        if kind == "response.output_item.added":
            item = event["item"]
            assert index == len(added) and len(done) == len(added), "an item opens after the previous one is done"
            assert not (call_started and item["type"] == "message"), "answer text after a tool call"
            call_started |= item["type"] == "function_call"
            ITEM_TYPES[item["type"]].model_validate(item)
            added[index] = item
            continue
        assert index in added and index not in done, f"{kind} outside its item"
        if kind == "response.output_item.done":
            assert event["item"]["id"] == added[index]["id"]
            ITEM_TYPES[event["item"]["type"]].model_validate(event["item"])
            done[index] = event["item"]
            continue
        assert event["item_id"] == added[index]["id"]
        if kind == "response.output_text.delta":
            assert not call_started, "answer text after a tool call"
        if kind.endswith(".delta"):
            texts[index] = texts.get(index, "") + event["delta"]
        elif kind in ("response.output_text.done", "response.reasoning_text.done"):
            assert event["text"] == texts.get(index, "")
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == texts.get(index, "")
    final = events[-1]["response"]
    check_response(final)
    if events[-1]["type"] != "response.failed":
        assert len(done) == len(added)
        assert len(final["output"]) == len(done)
        for item, done_item in zip(final["output"], (done[index] for index in sorted(done)), strict=True):
            # The SDK's stream helpers add fields of their own (parsed_arguments) to the final items.
            assert {key: item.get(key) for key in done_item} == done_item
    return final
