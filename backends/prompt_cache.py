"""Which KV-cache sequence (slot) a request runs in, and how much of its prompt is already there.

Each slot remembers the tokens its sequence holds. A request goes to the slot its `user` last
used, else to a free slot whose content it continues, else to the least recently used free slot;
a prefix held by another slot, busy or not, is copied instead of recomputed. So one conversation
never overwrites another's cache for a few shared tokens, and cached prefixes stay until their
slot is the least recently used. Pure bookkeeping: the engine applies the plan."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for left, right in zip(a, b):
        if left != right:
            break
        length += 1
    return length


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    last_used: float = 0.0
    cache_key: str | None = None
    busy: bool = False
    source: str = "slot"  # where its cached prefix came from: slot, disk (a restart), warm (a warm prompt)


@dataclass(frozen=True)
class Placement:
    slot: Slot
    keep: int  # prompt tokens already in the slot's KV after the plan is applied
    copy_from: Slot | None = None  # copy the first `keep` tokens from this slot's sequence
    source: str = "slot"  # what the reused tokens came from: slot, copy, disk, warm, ram
    dropped: list[int] | None = None  # the chosen slot's cached tokens before the plan cut them

    @property
    def cache_source(self) -> str | None:
        return self.source if self.keep else None


class PromptCache:
    # A prefix held by another slot is copied only when it beats the slot's own by this much:
    # a copy costs little, but below this it is not worth disturbing the cache.
    MIN_COPY_GAIN = 8

    def __init__(self, n_slots: int) -> None:
        self.slots = [Slot(seq_id) for seq_id in range(n_slots)]

    def free_count(self) -> int:
        return sum(not slot.busy for slot in self.slots)

    def busy_count(self) -> int:
        return sum(slot.busy for slot in self.slots)

    def place(self, prompt: Sequence[int], cache_key: str | None) -> Placement | None:
        """Claim a free slot for `prompt`; None when every slot is busy."""
        free = [slot for slot in self.slots if not slot.busy]
        if not free:
            return None
        prefix = {slot.seq_id: common_prefix_length(slot.tokens, prompt) for slot in self.slots}
        chosen = self._choose(free, prefix, cache_key, len(prompt))
        keep = prefix[chosen.seq_id]
        donor = max(self.slots, key=lambda slot: prefix[slot.seq_id])
        copy_from = None
        if donor is not chosen and prefix[donor.seq_id] >= keep + self.MIN_COPY_GAIN:
            copy_from, keep = donor, prefix[donor.seq_id]
        # The last prompt token is always computed: its logits give the first answer token.
        keep = min(keep, len(prompt) - 1)
        source = chosen.source if copy_from is None else ("copy" if copy_from.source == "slot" else copy_from.source)
        dropped = chosen.tokens if len(chosen.tokens) > keep else None
        chosen.busy = True
        chosen.source = "slot"
        chosen.cache_key = cache_key
        chosen.tokens = list(prompt[:keep])
        chosen.last_used = time.monotonic()
        return Placement(chosen, keep, copy_from, source, dropped)

    def _choose(self, free: list[Slot], prefix: dict[int, int], cache_key: str | None, prompt_length: int) -> Slot:
        """The conversation's own slot; else a slot this prompt continues; else the least
        recently used one (empty slots first), so that another conversation's cache survives.
        A shared prefix in a slot not chosen is copied from it by the caller."""
        for slot in free:
            if cache_key is not None and slot.cache_key == cache_key:
                return slot
        best = max(free, key=lambda slot: (prefix[slot.seq_id], -slot.last_used))
        shared = prefix[best.seq_id]
        owned_by_another = best.cache_key is not None and best.cache_key != cache_key
        # "Continues" = the shared prefix is most of what the slot holds (the next turn of its
        # conversation) or most of the new prompt (the same prompt again, a regenerated answer).
        continues = shared * 2 >= len(best.tokens) or shared * 2 >= prompt_length
        if shared and not owned_by_another and continues:
            return best
        return min(free, key=lambda slot: slot.last_used)

    def claim_free(self) -> Slot | None:
        """The least recently used free slot, claimed as is (a suspended request resumes in it)."""
        free = [slot for slot in self.slots if not slot.busy]
        if not free:
            return None
        slot = min(free, key=lambda candidate: candidate.last_used)
        slot.busy = True
        slot.last_used = time.monotonic()
        return slot

    def release(self, slot: Slot) -> None:
        """The request is over; its tokens stay cached for the next one."""
        slot.busy = False
        slot.last_used = time.monotonic()

    def evictable(self) -> list[Slot]:
        """Free slots holding a cached prefix, least recently used first."""
        return sorted((slot for slot in self.slots if not slot.busy and slot.tokens), key=lambda slot: slot.last_used)
