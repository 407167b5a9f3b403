"""Tool-call parsers and the streaming detector on recorded outputs of every format."""

from __future__ import annotations

import pytest

from chat_formats.tool_parsers import TOOL_PARSERS, ParsedCall, parser_for_template
from core.tool_stream import ToolCallDetector

LIGHT = ParsedCall("HassTurnOn", {"name": "kitchen light"})
CONTEXT = ParsedCall("GetLiveContext", {})

RECORDED = {
    "hermes": (
        'Sure.\n<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "GetLiveContext", "arguments": {}}\n</tool_call>',
        "Sure.\n",
    ),
    "mistral": ('[TOOL_CALLS] [{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}, {"name": "GetLiveContext", "arguments": {}}]', ""),
    "json": ('[{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}, {"name": "GetLiveContext"}]', ""),
    "llama3": ('<|python_tag|>[{"name": "HassTurnOn", "parameters": {"name": "kitchen light"}}, {"name": "GetLiveContext", "parameters": {}}]', ""),
    "react": ("Let me check.\nAction: HassTurnOn\nAction Input: {\"name\": \"kitchen light\"}", "Let me check.\n"),
}


def stream(parser_name: str, text: str, piece_size: int) -> tuple[str, list[ParsedCall] | None, bool]:
    """Feed `text` in pieces; return the content sent, the calls, and whether content followed a call."""
    detector = ToolCallDetector(TOOL_PARSERS[parser_name])
    sent = []
    content_after_call = False
    for start in range(0, len(text), piece_size):
        was_in_call = detector.in_call
        piece = detector.feed(text[start : start + piece_size])
        content_after_call |= was_in_call and bool(piece)
        sent.append(piece)
    rest, parsed = detector.finish()
    sent.append(rest)
    return "".join(sent), list(parsed.calls) if parsed else None, content_after_call


@pytest.mark.parametrize("parser_name", sorted(RECORDED))
@pytest.mark.parametrize("piece_size", [1, 3, 1000])
def test_recorded_calls_parse_in_any_split(parser_name: str, piece_size: int) -> None:
    text, content = RECORDED[parser_name]
    sent, calls, content_after_call = stream(parser_name, text, piece_size)
    expected = [LIGHT] if parser_name == "react" else [LIGHT, CONTEXT]
    assert calls == expected
    assert sent == content
    assert not content_after_call


@pytest.mark.parametrize("parser_name", sorted(RECORDED))
def test_plain_text_answers_stay_text(parser_name: str) -> None:
    text = "The kitchen light is already on. Anything else?"
    assert stream(parser_name, text, 1) == (text, None, False)


@pytest.mark.parametrize(
    ("parser_name", "malformed"),
    [
        ("hermes", 'Ok <tool_call>{"name": "HassTurnOn", "arguments": {"name": '),
        ("hermes", "<tool_call>not json</tool_call>"),
        ("mistral", "[TOOL_CALLS] [{oops}]"),
        ("json", '{"name": "HassTurnOn", "arguments": "{broken"}'),
        ("json", '{"temperature": 21}'),
        ("llama3", '{"name": 5}'),
        ("react", "Action: HassTurnOn\nAction Input: nope"),
    ],
)
def test_malformed_calls_come_back_as_text(parser_name: str, malformed: str) -> None:
    sent, calls, _ = stream(parser_name, malformed, 2)
    assert calls is None
    assert sent == malformed


def test_json_parser_streams_text_that_does_not_start_with_a_call() -> None:
    detector = ToolCallDetector(TOOL_PARSERS["json"])
    assert detector.feed("  ") == ""  # leading space is held: it could precede a call
    assert detector.feed("It is") == "  It is"
    assert detector.feed(' {"name": "x"}') == ' {"name": "x"}'  # a call only opens an answer


def test_json_parser_accepts_a_fenced_call() -> None:
    sent, calls, _ = stream("json", '```json\n{"name": "GetLiveContext", "arguments": {}}\n```', 4)
    assert calls == [CONTEXT] and sent == ""


def test_forced_detector_buffers_from_the_first_token() -> None:
    detector = ToolCallDetector(TOOL_PARSERS["json"], forced=True)
    assert detector.feed('{"name": "GetLive') == ""
    assert detector.feed('Context", "arguments": {}}') == ""
    assert detector.finish()[1].calls == (CONTEXT,)


def test_embedded_templates_pick_their_parser() -> None:
    assert parser_for_template("... <tool_call> ...") == "hermes"
    assert parser_for_template("... [TOOL_CALLS] ...") == "mistral"
    assert parser_for_template("... <|python_tag|> ...") == "llama3"
    assert parser_for_template("{{ messages }}") == "json"
