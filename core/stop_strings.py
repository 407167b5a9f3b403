"""Stop strings over streamed text: the stop text never reaches the client, also when it
arrives split across several deltas."""

from __future__ import annotations

from collections.abc import Sequence

MAX_STOPS = 16


def check_stops(stops: list[str], what: str = "stop strings") -> None:
    """Raise ValueError (for a request validator) unless `stops` are at most MAX_STOPS non-empty strings."""
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} {what} are supported")
    if any(stop == "" for stop in stops):
        raise ValueError(f"{what} must not be empty")


def first_match(text: str, patterns: Sequence[str]) -> int:
    """Index of the earliest occurrence of any pattern in `text`, or -1."""
    hits = [index for index in (text.find(pattern) for pattern in patterns) if index >= 0]
    return min(hits) if hits else -1


def partial_suffix_length(text: str, patterns: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into one of `patterns`."""
    longest = 0
    for pattern in patterns:
        for length in range(min(len(pattern) - 1, len(text)), longest, -1):
            if pattern.startswith(text[-length:]):
                longest = length
                break
    return longest


class StopStringMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> str:
        """Take new text; return what is safe to send now. Sets `stopped` when a stop matched."""
        if self.stopped:
            return ""
        self._pending += text
        index = first_match(self._pending, self._stops)
        if index >= 0:
            self.stopped = True
            self.matched = min((stop for stop in self._stops if self._pending.find(stop) == index), key=len)
            safe, self._pending = self._pending[:index], ""
            return safe
        keep = len(self._pending) - partial_suffix_length(self._pending, self._stops)
        safe, self._pending = self._pending[:keep], self._pending[keep:]
        return safe

    def flush(self) -> str:
        """The text held back at the end of the generation (it never became a stop string)."""
        rest, self._pending = self._pending, ""
        return rest
