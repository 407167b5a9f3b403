"""Splits a streamed answer into content and tool calls: text streams until a call marker
appears; from there the call is buffered and parsed when the answer ends. A malformed call is
returned as text, never an error."""

from __future__ import annotations

from chat_formats.tool_parsers import ParsedOutput, ToolCallParser
from core.stop_strings import first_match, partial_suffix_length


class ToolCallDetector:
    def __init__(self, parser: ToolCallParser, forced: bool = False) -> None:
        self._parser = parser
        self._pending = ""
        # The buffered call text once a call has started (from its marker on); None before.
        self._call_text: str | None = "" if forced else None
        self._start_decided = forced

    @property
    def in_call(self) -> bool:
        return self._call_text is not None

    def feed(self, text: str) -> str:
        """Take new text; return the content that is safe to send now."""
        if self._call_text is not None:
            self._call_text += text
            return ""
        self._pending += text
        if self._parser.only_at_start:
            return self._feed_at_start()
        index = first_match(self._pending, self._parser.markers)
        if index >= 0:
            content, self._call_text, self._pending = self._pending[:index], self._pending[index:], ""
            return content
        keep = len(self._pending) - partial_suffix_length(self._pending, self._parser.markers)
        content, self._pending = self._pending[:keep], self._pending[keep:]
        return content

    def _feed_at_start(self) -> str:
        if not self._start_decided:
            head = self._pending.lstrip()
            if not head or any(marker.startswith(head) for marker in self._parser.markers):
                return ""  # still could be the opening of a call
            self._start_decided = True
            if any(head.startswith(marker) for marker in self._parser.markers):
                self._call_text, self._pending = head, ""
                return ""
        content, self._pending = self._pending, ""
        return content

    def finish(self) -> tuple[str, ParsedOutput | None]:
        """At the end of the answer: the remaining content text and the parsed calls, if any."""
        if self._call_text is None:
            rest, self._pending = self._pending, ""
            return rest, None
        parsed = self._parser.parse(self._call_text)
        if parsed is None:
            return self._call_text, None
        return parsed.content, parsed
