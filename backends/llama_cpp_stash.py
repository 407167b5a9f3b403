"""Cached prefixes kept in memory after their slot is reused (llama.cpp engine).

With every slot busy on other work, a slot's cached prefix (the household's system prompt) is
overwritten by the next request placed there, and the next voice command would compute it again.
Before a placement cuts a long cached prefix, its KV state is copied to host memory; a later
request whose prompt shares more with a kept prefix than with any slot gets it copied back.
Bounded in bytes, least recently used out first. Decode thread only."""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from backends.prompt_cache import common_prefix_length

MIN_TOKENS = 256  # fewer lost tokens are cheaper to compute again than to copy the whole state


@dataclass(eq=False)
class Stashed:
    tokens: list[int]
    state: ctypes.Array
    last_used: float = field(default_factory=time.monotonic)


class PrefixStash:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, Stashed] = OrderedDict()
        self._bytes = 0

    def worth_keeping(self, tokens: list[int] | None, replaced_by: list[int]) -> bool:
        """Whether to copy a slot's cached `tokens` before the slot holds `replaced_by`: only when
        that loses many of them. The next command of a conversation keeps all but its last turn,
        and copying the whole state for that turn would cost more than it saves."""
        if self.max_bytes <= 0 or tokens is None:
            return False
        return len(tokens) - common_prefix_length(tokens, replaced_by) >= MIN_TOKENS

    def add(self, tokens: list[int], state: ctypes.Array) -> None:
        key = hash(tuple(tokens))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if len(state) > self.max_bytes:
            return
        self._entries[key] = Stashed(list(tokens), state)
        self._bytes += len(state)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.state)

    def best(self, prompt: list[int]) -> tuple[Stashed, int] | None:
        """The kept prefix sharing most with `prompt`, and how many tokens it shares."""
        best: tuple[Stashed, int] | None = None
        for entry in self._entries.values():
            shared = common_prefix_length(entry.tokens, prompt)
            if shared and (best is None or shared > best[1]):
                best = (entry, shared)
        if best is not None:
            best[0].last_used = time.monotonic()
            self._entries.move_to_end(hash(tuple(best[0].tokens)))
        return best

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
