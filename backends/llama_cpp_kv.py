"""The KV-cache side of the llama.cpp engine's slots: applying a placement (keep, trim or copy a
prefix), evicting the least recently used prefix when the cache is full, suspending a sequence to
memory and resuming it in another slot (priority preemption), and saving the hottest prefixes to
disk and restoring them (`PrefixStore`). The bookkeeping of which slot holds what is
`backends.prompt_cache`; this module applies it to llama.cpp's memory. Decode thread only."""

from __future__ import annotations

import ctypes
import logging
import time
from typing import Any

from backends.base import EngineError
from backends.llama_cpp_prefix_store import PrefixStore, wall_time
from backends.prompt_cache import Placement, PromptCache, Slot

logger = logging.getLogger(__name__)


class KvSlots:
    def __init__(self, ctx: Any, memory: Any, cache: PromptCache, store: PrefixStore | None, context_size: int) -> None:
        self._ctx = ctx
        self._memory = memory
        self._cache = cache
        self._store = store
        self._context_size = context_size
        self.restored = 0
        self.restore_seconds = 0.0

    def apply(self, placement: Placement) -> None:
        import llama_cpp

        seq = placement.slot.seq_id
        if placement.copy_from is not None:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, 0, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, placement.copy_from.seq_id, seq, 0, placement.keep)
        else:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, placement.keep, -1)

    def evict_one(self) -> None:
        """The KV cache is full: drop the least recently used cached prefix of a free slot."""
        import llama_cpp

        victims = self._cache.evictable()
        if not victims:
            raise EngineError("the KV cache is full; lower JARVIS_PARALLEL or raise JARVIS_CONTEXT_SIZE")
        llama_cpp.llama_memory_seq_rm(self._memory, victims[0].seq_id, 0, -1)
        victims[0].tokens = []

    # ---- preemption -----------------------------------------------------------------------------

    def suspend(self, slot: Slot) -> ctypes.Array:
        """The sequence's KV state as bytes; the slot stays cached and is freed for another request."""
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(self._ctx, slot.seq_id)
        state = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ctx, state, size, slot.seq_id) != size:
            raise EngineError(f"llama.cpp could not copy the state of sequence {slot.seq_id}")
        return state

    def resume(self, slot: Slot, state: ctypes.Array, tokens: list[int]) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, 0, -1)
        if llama_cpp.llama_state_seq_set_data(self._ctx, state, len(state), slot.seq_id) == 0:
            raise EngineError(f"llama.cpp could not restore a suspended sequence into slot {slot.seq_id}")
        slot.tokens = list(tokens)
        slot.source = "slot"

    def restore_prefix(self, slot: Slot, state: ctypes.Array, tokens: list[int], keep: int) -> None:
        """Copy a kept prefix's state (of `tokens`) into `slot`, then cut it to its first `keep` tokens."""
        import llama_cpp

        self.resume(slot, state, tokens)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
        slot.tokens = list(tokens[:keep])

    # ---- disk -----------------------------------------------------------------------------------

    def restore_from_disk(self) -> None:
        if self._store is None:
            return
        started = time.perf_counter()
        free = [slot for slot in self._cache.slots if not slot.busy and not slot.tokens]
        restored = self._store.restore(self._ctx, [slot.seq_id for slot in free], self._context_size)
        by_seq = {slot.seq_id: slot for slot in free}
        for seq_id, tokens, last_used in restored:
            slot = by_seq[seq_id]
            slot.tokens, slot.source = tokens, "disk"
            slot.last_used = time.monotonic() - max(0.0, time.time() - last_used)
        self.restored = len(restored)
        self.restore_seconds = time.perf_counter() - started
        if restored:
            logger.info(
                "prompt cache: restored %d prefixes (%s tokens) from %s in %.2f s",
                len(restored), ", ".join(str(len(tokens)) for _, tokens, _ in restored), self._store.folder, self.restore_seconds,
            )

    def save_to_disk(self) -> None:
        if self._store is None:
            return
        slots = sorted((slot for slot in self._cache.slots if len(slot.tokens) > 1), key=lambda slot: slot.last_used, reverse=True)
        started = time.perf_counter()
        saved = self._store.save(self._ctx, [(slot.seq_id, slot.tokens, wall_time(slot.last_used)) for slot in slots])
        if slots:
            logger.info("prompt cache: saved %d of %d cached prefixes to %s in %.2f s", saved, len(slots), self._store.folder, time.perf_counter() - started)
