"""Cached prompt prefixes that survive an unload or a restart (llama.cpp engine).

When the engine closes (keep-alive, admin unload, LRU, engine switch, server stop) the KV state of
its most recently used slots is written to disk with llama.cpp's per-sequence state save; when the
model loads again, it is read back into the slots, so the household's system prompt is warm on the
first spoken command.

Files live under `<cache dir>/prompt-cache/<model key>/`. The key covers the model file (path,
size, modification time), the context settings and the llama.cpp version, so a changed model or
setting never restores a foreign cache; the files carry their exact token prefix, so a changed
template only misses. Each file's sha256 is kept in the index and checked before loading: a
corrupt or stale file is discarded with a log line. Total size is bounded, oldest out first."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INDEX = "index.json"


@dataclass
class SavedPrefix:
    name: str
    tokens: int
    bytes: int
    sha256: str
    last_used: float  # wall-clock time the slot was last used


def model_key(model_path: str, settings: dict[str, object]) -> str:
    """Names the cache of one model file with one set of context settings and llama.cpp build."""
    import llama_cpp

    stat = Path(model_path).stat()
    material = json.dumps(
        [str(Path(model_path).resolve()), stat.st_size, stat.st_mtime_ns, llama_cpp.__version__, settings], sort_keys=True
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


class PrefixStore:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    # ---- index --------------------------------------------------------------------------------

    def entries(self) -> list[SavedPrefix]:
        """Saved prefixes, most recently used first."""
        try:
            raw = json.loads((self.folder / INDEX).read_text())
            entries = [SavedPrefix(**item) for item in raw]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as error:
            logger.warning("prompt cache index %s is unreadable (%s): starting it afresh", self.folder / INDEX, error)
            return []
        return sorted(entries, key=lambda entry: entry.last_used, reverse=True)

    def _write_index(self, entries: list[SavedPrefix]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".{INDEX}.{os.getpid()}"
        temporary.write_text(json.dumps([asdict(entry) for entry in entries], indent=1))
        temporary.replace(self.folder / INDEX)

    # ---- saving -------------------------------------------------------------------------------

    def save(self, ctx: Any, slots: list[tuple[int, list[int], float]]) -> int:
        """Write each (seq_id, tokens, last_used) slot's KV state; returns how many were saved.
        Keeps the newest files within `max_bytes`."""
        import llama_cpp

        self.folder.mkdir(parents=True, exist_ok=True)
        kept = {entry.name: entry for entry in self.entries()}
        saved = 0
        for seq_id, tokens, last_used in slots:
            if len(tokens) < 2:
                continue
            name = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:24] + ".kv"
            path = self.folder / name
            if name in kept and path.is_file():
                kept[name].last_used = max(kept[name].last_used, last_used)
                continue
            temporary = self.folder / f".{name}.{os.getpid()}"
            array = (llama_cpp.llama_token * len(tokens))(*tokens)
            written = llama_cpp.llama_state_seq_save_file(ctx, str(temporary).encode(), seq_id, array, len(tokens))
            if not written:
                logger.warning("prompt cache: llama.cpp could not save slot %d (%d tokens)", seq_id, len(tokens))
                temporary.unlink(missing_ok=True)
                continue
            temporary.replace(path)
            kept[name] = SavedPrefix(name, len(tokens), path.stat().st_size, _file_sha256(path), last_used)
            saved += 1
        self._write_index(self._within_bounds(list(kept.values())))
        return saved

    def _within_bounds(self, entries: list[SavedPrefix]) -> list[SavedPrefix]:
        entries.sort(key=lambda entry: entry.last_used, reverse=True)
        total, kept = 0, []
        for entry in entries:
            total += entry.bytes
            if total > self.max_bytes:
                (self.folder / entry.name).unlink(missing_ok=True)
                continue
            kept.append(entry)
        return kept

    # ---- restoring ----------------------------------------------------------------------------

    def restore(self, ctx: Any, seq_ids: list[int], capacity: int) -> list[tuple[int, list[int], float]]:
        """Load the newest saved prefixes into `seq_ids`, one each: [(seq_id, tokens, last_used)].
        A file that is missing, corrupt or rejected by llama.cpp is discarded with a log line."""
        import llama_cpp

        restored: list[tuple[int, list[int], float]] = []
        good: list[SavedPrefix] = []
        for entry in self.entries():
            path = self.folder / entry.name
            if len(restored) == len(seq_ids):
                good.append(entry)
                continue
            if not path.is_file() or entry.tokens > capacity or _file_sha256(path) != entry.sha256:
                logger.warning("prompt cache: discarding %s (missing, too long for the context, or corrupt)", path)
                path.unlink(missing_ok=True)
                continue
            seq_id = seq_ids[len(restored)]
            tokens = (llama_cpp.llama_token * capacity)()
            count = ctypes.c_size_t(0)
            read = llama_cpp.llama_state_seq_load_file(ctx, str(path).encode(), seq_id, tokens, capacity, ctypes.byref(count))
            if not read or count.value != entry.tokens:
                logger.warning("prompt cache: llama.cpp rejected %s: discarding it", path)
                llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq_id, 0, -1)
                path.unlink(missing_ok=True)
                continue
            restored.append((seq_id, list(tokens[: count.value]), entry.last_used))
            good.append(entry)
        with contextlib.suppress(OSError):
            self._write_index(good)
        return restored


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wall_time(monotonic_value: float) -> float:
    """A slot's monotonic last-use time as wall-clock time (what the index keeps across restarts)."""
    return time.time() - (time.monotonic() - monotonic_value)
