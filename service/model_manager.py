"""Which models are loaded, and when: on-demand loading with a start timeout, unloading of the
least recently used beyond JARVIS_MAX_LOADED_MODELS and of models idle past their keep-alive,
and switching a model's engine at runtime. No request is ever cut: a model is unloaded only
once its in-flight requests have finished."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from backends import ENGINE_OPTIONS, create_engine
from backends.base import Engine, EngineConfig, EngineInfo
from chat_formats import ChatFormat, resolve_chat_format
from service.errors import ModelNotFoundError, ModelNotReadyError
from service.model_files import resolve_model
from service.model_registry import ModelEntry
from service.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[ModelEntry, EngineConfig], Engine]


def default_engine_factory(entry: ModelEntry, config: EngineConfig) -> Engine:
    return create_engine(entry.engine, config)


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
    info: EngineInfo | None = None
    chat_format: ChatFormat | None = None
    in_flight: int = 0
    last_used: float = 0.0
    load_seconds: float | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    transition: asyncio.Task | None = None  # the load or unload under way

    def __post_init__(self) -> None:
        self.idle.set()

    def engine_failure(self) -> str | None:
        """Why the loaded engine can no longer serve (its decode loop died), or None."""
        health = getattr(self.engine, "health", None)
        return health() if callable(health) else None

    def status(self) -> dict[str, object]:
        stats = getattr(self.engine, "stats", None)
        return {
            "alias": self.entry.alias,
            "aliases": list(self.entry.aliases),
            "engine": self.entry.engine,
            "model": self.entry.model or "(packaged gemma-3-270m)",
            "state": self.state.value,
            "stage": self.stage,
            "failure": self.failure or (self.engine_failure() if self.state == ModelState.LOADED else None),
            "in_flight": self.in_flight,
            "load_seconds": self.load_seconds,
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


class ModelManager:
    def __init__(self, settings: Settings, entries: list[ModelEntry], engine_factory: EngineFactory | None = None) -> None:
        self._settings = settings
        self._models = [ManagedModel(entry) for entry in entries]
        self._factory = engine_factory or default_engine_factory
        self._load_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self._keep_alive_task: asyncio.Task | None = None
        # Keep-alives set by clients (Ollama's keep_alive), each for the engine it was set on (a
        # weak reference: an unloaded engine's memory must be freed, and a reload starts afresh).
        self._keep_alive_overrides: dict[ManagedModel, tuple[weakref.ref[Engine], float]] = {}

    # ---- lookup ---------------------------------------------------------------------------

    @property
    def models(self) -> list[ManagedModel]:
        return list(self._models)

    @property
    def default(self) -> ManagedModel:
        return self._models[0]

    def resolve(self, name: str | None) -> ManagedModel:
        """The model a request names. With one model configured every name is served by it;
        with several, an unknown name is a 404, never a silent fallback."""
        if len(self._models) == 1:
            return self._models[0]
        if name is None:
            return self.default
        for model in self._models:
            if name in model.entry.names() or name == model.entry.model or (model.info and name == model.info.model_id):
                return model
        raise ModelNotFoundError(name)

    def by_alias(self, alias: str) -> ManagedModel:
        for model in self._models:
            if alias in model.entry.names():
                return model
        raise ModelNotFoundError(alias)

    # ---- leases ---------------------------------------------------------------------------

    async def acquire(self, name: str | None) -> Lease:
        model = self.resolve(name)
        deadline = time.monotonic() + self._settings.model_start_timeout
        while True:
            if model.state == ModelState.LOADED:
                assert model.engine and model.info and model.chat_format
                broken = model.engine_failure()
                if broken is not None:
                    raise ModelNotReadyError(f"{model.entry.alias} cannot serve: {broken}")
                model.in_flight += 1
                model.idle.clear()
                return Lease(model, model.engine, model.info, model.chat_format)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelNotReadyError(f"{model.entry.alias} did not load within {self._settings.model_start_timeout:.0f} s")
            transition = model.transition
            if transition is None or transition.done():
                if model.state == ModelState.FAILED and transition is not None:
                    raise ModelNotReadyError(f"{model.entry.alias} failed to load: {model.failure}")
                transition = self.start_loading(model)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(transition), remaining)
            if model.state == ModelState.FAILED:
                raise ModelNotReadyError(f"{model.entry.alias} failed to load: {model.failure}")

    # ---- loading and unloading ------------------------------------------------------------

    def start_loading(self, model: ManagedModel) -> asyncio.Task:
        if model.transition is None or model.transition.done():
            model.state = ModelState.LOADING
            model.stage = "waiting to load"
            model.failure = None
            model.transition = asyncio.create_task(self._load(model))
        return model.transition

    async def load(self, alias: str) -> ManagedModel:
        model = self.by_alias(alias)
        if model.state != ModelState.LOADED:
            await self.start_loading(model)
        if model.state == ModelState.FAILED:
            raise ModelNotReadyError(f"{alias} failed to load: {model.failure}")
        return model

    async def _load(self, model: ManagedModel) -> None:
        async with self._load_lock:  # one load at a time: memory is the constraint
            await self._make_room(model)
            started = time.monotonic()
            engine: Engine | None = None
            try:
                model.stage = "preparing model"
                path = await asyncio.to_thread(resolve_model, model.entry.model, self._settings.cache_dir)
                engine = self._factory(model.entry, self._engine_config(model, path))
                model.stage = "loading model"
                await engine.start()
                info = engine.info()
                chat_format = resolve_chat_format(model.entry.chat_format, info.architecture, info.chat_template)
            except Exception as error:
                model.state, model.stage, model.failure = ModelState.FAILED, "failed", str(error)
                logger.error("model %s failed to load: %s", model.entry.alias, error)
                if engine is not None:
                    with contextlib.suppress(Exception):
                        await engine.close()
                return
            model.engine, model.info, model.chat_format = engine, info, chat_format
            model.load_seconds = time.monotonic() - started
            model.last_used = time.monotonic()
            model.state, model.stage = ModelState.LOADED, "ready"
            logger.info(
                "model %s (%s) ready on %s in %.1f s: context %d, chat format %s",
                model.entry.alias, info.model_id, engine.name, model.load_seconds, info.context_length, chat_format.name,
            )

    async def _make_room(self, incoming: ManagedModel) -> None:
        while True:
            loaded = [m for m in self._models if m is not incoming and m.state == ModelState.LOADED]
            if len(loaded) < self._settings.max_loaded_models:
                return
            victim = min(loaded, key=lambda m: m.last_used)
            logger.info("unloading %s to make room for %s", victim.entry.alias, incoming.entry.alias)
            await self._unload(victim)

    async def unload(self, alias: str) -> ManagedModel:
        model = self.by_alias(alias)
        if model.transition is not None and not model.transition.done() and model.state == ModelState.LOADING:
            await asyncio.shield(model.transition)
        if model.state == ModelState.LOADED:
            model.transition = asyncio.create_task(self._unload(model))
            await asyncio.shield(model.transition)
        return model

    async def _unload(self, model: ManagedModel) -> None:
        model.state, model.stage = ModelState.UNLOADING, "waiting for in-flight requests"
        await model.idle.wait()
        engine, model.engine, model.info, model.chat_format = model.engine, None, None, None
        model.stage = "unloading"
        if engine is not None:
            await engine.close()
        del engine
        _release_memory()
        model.state, model.stage = ModelState.UNLOADED, "unloaded"
        logger.info("model %s unloaded", model.entry.alias)

    # ---- runtime engine switch --------------------------------------------------------------

    async def switch_engine(self, engine_name: str, alias: str | None = None) -> tuple[ManagedModel, str]:
        """Serve `alias` (default: the default model) on `engine_name` from now on. Requests in
        flight finish on the old engine, which is unloaded after them."""
        old = self.by_alias(alias) if alias else self.default
        previous = old.entry.engine
        if previous == engine_name:
            return old, previous
        options = self._settings.vllm_options() if engine_name == "vllm" else {}
        options.update({k: v for k, v in old.entry.options.items() if k in ENGINE_OPTIONS[engine_name]})
        new = ManagedModel(old.entry.model_copy(update={"engine": engine_name, "options": options}))
        self._models[self._models.index(old)] = new
        if old.state in (ModelState.LOADED, ModelState.LOADING):
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        await self.start_loading(new)
        return new, previous

    async def _retire(self, model: ManagedModel) -> None:
        if model.transition is not None and not model.transition.done():
            await asyncio.shield(model.transition)
        if model.state == ModelState.LOADED:
            await self._unload(model)

    # ---- keep-alive ------------------------------------------------------------------------

    def start_keep_alive(self) -> None:
        if any(self._keep_alive(model) > 0 for model in self._models):
            self._keep_alive_task = asyncio.create_task(self._keep_alive_loop())

    def _keep_alive(self, model: ManagedModel) -> float:
        value = model.entry.keep_alive_seconds
        return self._settings.keep_alive_seconds if value is None else value

    def set_keep_alive(self, model: ManagedModel, seconds: float | None) -> None:
        """A client's keep-alive for `model` while its current engine serves: the seconds it may
        stay idle before it is unloaded (0: as soon as its requests have finished; math.inf:
        never). None goes back to the registry's keep_alive_seconds."""
        if seconds is None or model.engine is None:
            self._keep_alive_overrides.pop(model, None)
            return
        self._keep_alive_overrides[model] = (weakref.ref(model.engine), seconds)
        if self._keep_alive_task is None or self._keep_alive_task.done():
            self._keep_alive_task = asyncio.create_task(self._keep_alive_loop())

    def expires_at(self, model: ManagedModel) -> float | None:
        """The Unix time at which `model` is unloaded if no request comes, or None for never."""
        limit = self._idle_limit(model)
        return None if limit is None else time.time() - (time.monotonic() - model.last_used) + limit

    def _idle_limit(self, model: ManagedModel) -> float | None:
        """Seconds `model` may stay idle before it is unloaded; None = it stays loaded."""
        override = self._keep_alive_overrides.get(model)
        if override is not None and model.engine is not None and override[0]() is model.engine:
            return None if math.isinf(override[1]) else override[1]
        return self._keep_alive(model) or None  # 0 in the registry means never

    async def _keep_alive_loop(self) -> None:
        while True:
            limits = [limit for m in self._models if (limit := self._idle_limit(m)) is not None]
            # At least once a second, so that a keep-alive a client sets later is honoured promptly.
            await asyncio.sleep(min(1.0, max(0.1, min(limits, default=4.0) / 4)))
            now = time.monotonic()
            for model in self._models:
                limit = self._idle_limit(model)
                idle_for = now - model.last_used
                if limit is not None and model.state == ModelState.LOADED and model.in_flight == 0 and idle_for > limit:
                    logger.info("model %s idle for %.1f s: unloading", model.entry.alias, idle_for)
                    await self.unload(model.entry.alias)

    async def close(self) -> None:
        if self._keep_alive_task is not None:
            self._keep_alive_task.cancel()
        for task in [*self._retiring, *(m.transition for m in self._models if m.transition)]:
            task.cancel()
        for model in self._models:
            if model.engine is not None:
                with contextlib.suppress(Exception):
                    await model.engine.close()
                model.engine = None
                model.state = ModelState.UNLOADED

    def _engine_config(self, model: ManagedModel, model_path: str) -> EngineConfig:
        settings = self._settings
        entry = model.entry
        options = dict(entry.options)
        return EngineConfig(
            model=model_path,
            context_size=entry.context_size or settings.context_size,
            cache_dir=str(settings.cache_dir),
            n_threads=options.pop("n_threads", settings.n_threads),  # type: ignore[arg-type]
            n_gpu_layers=options.pop("n_gpu_layers", settings.n_gpu_layers),  # type: ignore[arg-type]
            parallel=options.pop("parallel", settings.parallel),  # type: ignore[arg-type]
            options={"max_queue": settings.max_queue, **options},
            on_stage=lambda stage: setattr(model, "stage", stage),
        )


def _release_memory() -> None:
    """Give freed model memory back to the OS, so unloading shows in the process RSS."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name).malloc_trim(0)
