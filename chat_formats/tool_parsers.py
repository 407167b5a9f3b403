"""Tool-call parsers by name: each turns a model's raw output into tool calls, in the syntax its
chat format taught the model. A parser also names the markers that open a call, so the facade
can stream text until a call starts and hold back text that might be the start of a marker."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedOutput:
    content: str  # text before the first call
    calls: tuple[ParsedCall, ...]


class ToolCallParser(Protocol):
    name: str
    # Text that opens a call. With `only_at_start`, a call may only begin the answer.
    markers: tuple[str, ...]
    only_at_start: bool

    def parse(self, text: str) -> ParsedOutput | None:
        """The calls in `text` (which starts at a marker), or None when they are malformed."""


def _decode_call(value: object, arguments_keys: tuple[str, ...] = ("arguments", "parameters")) -> ParsedCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments: object = {}
    for key in arguments_keys:
        if key in value:
            arguments = value[key]
            break
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(value["name"], arguments)


def _decode_calls(value: object) -> tuple[ParsedCall, ...] | None:
    items = value if isinstance(value, list) else [value]
    calls = tuple(_decode_call(item) for item in items)
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _json_prefix(text: str) -> tuple[object, str] | None:
    """The JSON value at the start of `text` and what follows it."""
    stripped = text.lstrip()
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return None
    return value, stripped[end:]


class HermesParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, once per call (chatml, Qwen, Hermes)."""

    name = "hermes"
    markers = ("<tool_call>",)
    only_at_start = False
    _CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)

    def parse(self, text: str) -> ParsedOutput | None:
        bodies = self._CALL.findall(text)
        calls = []
        for body in bodies:
            decoded = _json_prefix(body)
            call = _decode_call(decoded[0]) if decoded and not decoded[1].strip() else None
            if call is None:
                return None
            calls.append(call)
        leftover = self._CALL.sub("", text).strip()
        if not calls or leftover:
            return None
        return ParsedOutput("", tuple(calls))


class MistralParser:
    """`[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`."""

    name = "mistral"
    markers = ("[TOOL_CALLS]",)
    only_at_start = False

    def parse(self, text: str) -> ParsedOutput | None:
        decoded = _json_prefix(text.removeprefix("[TOOL_CALLS]"))
        if decoded is None or decoded[1].strip():
            return None
        calls = _decode_calls(decoded[0])
        return ParsedOutput("", calls) if calls else None


class JsonParser:
    """A bare JSON answer `{"name": ..., "arguments": {...}}` or a list of them, for formats without
    a call syntax of their own (gemma) and for calls forced by a grammar."""

    name = "json"
    markers = ("{", "[", "```json")
    only_at_start = True

    def parse(self, text: str) -> ParsedOutput | None:
        decoded = _json_prefix(_strip_code_fence(text))
        if decoded is None or decoded[1].strip():
            return None
        calls = _decode_calls(decoded[0])
        return ParsedOutput("", calls) if calls else None


class Llama3Parser(JsonParser):
    """llama 3.1 JSON calls: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`."""

    name = "llama3"
    markers = ("<|python_tag|>", "{", "[", "```json")

    def parse(self, text: str) -> ParsedOutput | None:
        return super().parse(text.removeprefix("<|python_tag|>"))


class ReactParser:
    """The ReAct text protocol: `Action: <tool name>` then `Action Input: <JSON arguments>`."""

    name = "react"
    markers = ("Action:",)
    only_at_start = False
    _CALL = re.compile(r"Action:\s*([^\n]+?)\s*\n\s*Action Input:\s*", re.DOTALL)

    def parse(self, text: str) -> ParsedOutput | None:
        match = self._CALL.match(text)
        if match is None:
            return None
        decoded = _json_prefix(text[match.end() :])
        if decoded is None or not isinstance(decoded[0], dict):
            return None
        trailing = decoded[1].strip()
        if trailing and not trailing.startswith("Observation:"):
            return None
        return ParsedOutput("", (ParsedCall(match.group(1).strip(), decoded[0]),))


def _strip_code_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.removesuffix("```").rstrip()
    return stripped


TOOL_PARSERS: dict[str, ToolCallParser] = {
    parser.name: parser for parser in (HermesParser(), MistralParser(), JsonParser(), Llama3Parser(), ReactParser())
}


def parser_for_template(template: str) -> str:
    """Guess the call syntax an embedded chat template teaches, from the markers it contains."""
    for marker, parser_name in (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"), ("<|python_tag|>", "llama3")):
        if marker in template:
            return parser_name
    return "json"
