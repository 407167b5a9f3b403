"""Stop strings over streamed text: the stop text never reaches the client, also when it
arrives split across several deltas."""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Take new text; return what is safe to send now. Sets `stopped` when a stop matched."""
        if self.stopped:
            return ""
        self._pending += text
        hits = [index for index in (self._pending.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            self.stopped = True
            safe, self._pending = self._pending[: min(hits)], ""
            return safe
        held = self._held_suffix_length()
        safe = self._pending[: len(self._pending) - held]
        self._pending = self._pending[len(self._pending) - held :]
        return safe

    def flush(self) -> str:
        """The text held back at the end of the generation (it never became a stop string)."""
        rest, self._pending = self._pending, ""
        return rest

    def _held_suffix_length(self) -> int:
        """Length of the longest tail of the pending text that could still grow into a stop."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if stop.startswith(self._pending[-length:]):
                    longest = length
                    break
        return longest
