"""Splits a model's "thinking" from its answer: text between a chat format's reasoning markers
(`<think>` ... `</think>`) is reasoning, never content. Works on streamed text: a marker split
across deltas is held back until it is known."""

from __future__ import annotations

from core.stop_strings import partial_suffix_length


class ReasoningSplitter:
    def __init__(self, start: str, end: str, *, inside: bool = False) -> None:
        self._start, self._end = start, end
        self._inside = inside  # the template may open the thinking block itself
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Take new text; return (reasoning, content) that is safe to send now."""
        self._pending += text
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            marker = self._end if self._inside else self._start
            index = self._pending.find(marker)
            if index < 0:
                break
            (reasoning if self._inside else content).append(self._pending[:index])
            self._pending = self._pending[index + len(marker) :]
            self._inside = not self._inside
        marker = self._end if self._inside else self._start
        keep = len(self._pending) - partial_suffix_length(self._pending, [marker])
        (reasoning if self._inside else content).append(self._pending[:keep])
        self._pending = self._pending[keep:]
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        rest, self._pending = self._pending, ""
        return (rest, "") if self._inside else ("", rest)
