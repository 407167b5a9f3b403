"""One registry entry at runtime: its state, its engine once loaded, and the leases requests
hold on it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum

from backends.base import Engine, EngineInfo
from chat_formats import ChatFormat
from service.model_registry import ModelEntry


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(eq=False)
class ManagedModel:
    entry: ModelEntry
    state: ModelState = ModelState.UNLOADED
    stage: str = "unloaded"  # what a loading model is doing, for /health and status
    failure: str | None = None
    engine: Engine | None = None
    # An engine chosen at runtime (POST /admin/engine) instead of the entry's; not persisted.
    engine_override: str | None = None
    # The engine kind serving it: the one asked for, or another one the fallback started it on.
    engine_kind: str | None = None
    fallback: str | None = None  # why it runs on another engine than its entry names
    info: EngineInfo | None = None
    chat_format: ChatFormat | None = None
    in_flight: int = 0
    last_used: float = 0.0
    load_seconds: float | None = None
    failed_at: float = 0.0  # monotonic time of the last failed load
    # Requests another model served because this one could not (its entry's `fallback`), and the last one's why.
    fallbacks: int = 0
    last_fallback: dict[str, object] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    transition: asyncio.Task | None = None  # the load or unload under way

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def serving_entry(self) -> ModelEntry:
        """The entry as it is to be started: on the runtime engine choice, if there is one."""
        return self.entry.for_engine(self.engine_override) if self.engine_override else self.entry

    @property
    def running_engine(self) -> str:
        return self.engine_kind or self.engine_override or self.entry.engine

    def engine_failure(self) -> str | None:
        """Why the loaded engine can no longer serve (its decode loop died), or None."""
        health = getattr(self.engine, "health", None)
        return health() if callable(health) else None

    def status(self) -> dict[str, object]:
        stats = getattr(self.engine, "stats", None)
        return {
            "alias": self.entry.alias,
            "aliases": list(self.entry.aliases),
            "engine": self.running_engine,
            "configured_engine": self.entry.engine,
            "engine_override": self.engine_override,
            "fallback": self.fallback,
            "fallback_model": self.entry.fallback,
            "last_fallback": self.last_fallback,
            "model": self.entry.model or "(packaged gemma-3-270m)",
            "state": self.state.value,
            "stage": self.stage,
            "failure": self.failure or (self.engine_failure() if self.state == ModelState.LOADED else None),
            "in_flight": self.in_flight,
            "load_seconds": self.load_seconds,
            # Since the last request ended (or the load, before any request); None before the first load.
            "idle_seconds": round(time.monotonic() - self.last_used, 1) if self.last_used else None,
            "context_length": self.info.context_length if self.info else None,
            "chat_format": self.chat_format.name if self.chat_format else None,
            "engine_stats": stats() if callable(stats) and self.state == ModelState.LOADED else None,
        }


@dataclass(eq=False)
class Lease:
    """A loaded model held for one request; release it when the request ends (idempotent)."""

    model: ManagedModel
    engine: Engine
    info: EngineInfo
    chat_format: ChatFormat
    _released: bool = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.model.in_flight -= 1
        self.model.last_used = time.monotonic()
        if self.model.in_flight == 0:
            self.model.idle.set()
