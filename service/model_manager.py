"""Which models are loaded, and when: on-demand loading with a start timeout, unloading of the
least recently used beyond JARVIS_MAX_LOADED_MODELS and of models idle past their keep-alive,
and switching a model's engine at runtime. No request is ever cut: a model is unloaded only
once its in-flight requests have finished."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from backends import create_engine, engine_kind
from backends.base import Engine, EngineConfig, EngineError, EngineInfo
from backends.kinds import local_engine_names, model_format
from chat_formats import ChatFormat, resolve_chat_format
from service.errors import ModelNotFoundError, ModelNotReadyError
from service.managed_model import Lease, ManagedModel, ModelState
from service.model_files import resolve_model
from service.model_registry import ModelEntry
from service.registry_edits import RegistryService
from service.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[ModelEntry, EngineConfig], Engine]

__all__ = ["EngineFactory", "Lease", "ManagedModel", "ModelManager", "ModelState", "RegistryApplied"]

# A remote model that failed to load (no upstream answered) is tried again after this long; until
# then, and while it loads again, its fallback serves.
REMOTE_RETRY_SECONDS = 10.0


def default_engine_factory(entry: ModelEntry, config: EngineConfig) -> Engine:
    """The real engine of the entry's kind, if that kind can run this model here."""
    kind = engine_kind(entry.engine)
    available = kind.availability()
    if not available.available:
        raise EngineError(available.reason)
    source = model_format(entry.model)
    if kind.local and not kind.runs(source):
        raise EngineError(f"{kind.label} cannot run {entry.model!r}: it runs {' and '.join(kind.formats)} models, this is {source}")
    return create_engine(entry.engine, config)


@dataclass(frozen=True)
class RegistryApplied:
    """What applying a registry changed: alias -> added, updated, reloaded, removed or unchanged;
    and the models being reloaded (await `ModelManager.settled` for them)."""

    outcomes: dict[str, str]
    reloading: list[ManagedModel]


class ModelManager:
    def __init__(self, settings: Settings, entries: list[ModelEntry], engine_factory: EngineFactory | None = None) -> None:
        self._settings = settings
        self._models = [ManagedModel(entry) for entry in entries]
        self._factory = engine_factory or default_engine_factory
        self._fallback = settings.inference_engine == "fallback"
        self._load_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        self._keep_alive_task: asyncio.Task | None = None
        self.registry = RegistryService(settings, self)
        logger.info("model registry: %s (%s)", self.registry.file.path, self.registry.source)
        # Keep-alives set by clients (Ollama's keep_alive), each for the engine it was set on (a
        # weak reference: an unloaded engine's memory must be freed, and a reload starts afresh).
        self._keep_alive_overrides: dict[ManagedModel, tuple[weakref.ref[Engine], float]] = {}
        # Called with each model once it is loaded, before its load counts as done (warm prompts).
        self.on_loaded: list[Callable[[ManagedModel], Awaitable[None]]] = []

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
                    if not self._retry_remote(model):
                        raise ModelNotReadyError(f"{model.entry.alias} failed to load: {model.failure}")
                    if model.entry.fallback is not None:
                        raise ModelNotReadyError(f"{model.entry.alias} failed to load ({model.failure}); loading it again")
                transition = self.start_loading(model)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(transition), remaining)
            if model.state == ModelState.FAILED:
                raise ModelNotReadyError(f"{model.entry.alias} failed to load: {model.failure}")

    def _retry_remote(self, model: ManagedModel) -> bool:
        """Load a failed remote model again (in the background) once its retry time has come:
        its upstreams may answer now. Local models that failed stay failed until told to load."""
        if engine_kind(model.running_engine).local or time.monotonic() - model.failed_at < REMOTE_RETRY_SECONDS:
            return False
        self.start_loading(model)
        return True

    def fallback_for(self, name: str | None, reason: str) -> str | None:
        """The alias serving instead of the model `name` names, when that one cannot serve
        (`reason`); None when it names no fallback. Logged and kept for /admin/status."""
        try:
            model = self.resolve(name)
        except ModelNotFoundError:
            return None
        alias = model.entry.fallback
        if alias is None:
            return None
        model.fallbacks += 1
        model.last_fallback = {"to": alias, "reason": reason, "at": time.time(), "count": model.fallbacks}
        logger.warning("model %s cannot serve (%s): the fallback %s serves instead", model.entry.alias, reason, alias)
        return alias

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
        """Start the model on its engine; with JARVIS_INFERENCE_ENGINE=fallback, on the next
        engine kind when it cannot start there."""
        async with self._load_lock:  # one load at a time: memory is the constraint
            await self._make_room(model)
            started = time.monotonic()
            failures: list[tuple[str, str]] = []
            wanted = model.serving_entry
            for engine_name in self._engine_order(wanted):
                entry = wanted if engine_name == wanted.engine else wanted.for_engine(engine_name)
                try:
                    engine, info, chat_format = await self._start(model, entry, fallback=bool(failures))
                except Exception as error:
                    failures.append((engine_name, " ".join(str(error).split())))  # one line, for /health
                    logger.error("model %s could not start on %s: %s", model.entry.alias, engine_name, error)
                    continue
                model.engine, model.info, model.chat_format, model.engine_kind = engine, info, chat_format, engine_name
                model.fallback = _fallback_note(failures, engine_name)
                model.load_seconds = time.monotonic() - started
                model.last_used = time.monotonic()
                # Serving, but not "ready" until the after-load steps (warm prompts) are done.
                model.state, model.stage = ModelState.LOADED, "warming up"
                if model.fallback:
                    logger.warning("model %s: %s", model.entry.alias, model.fallback)
                logger.info(
                    "model %s (%s) ready on %s in %.1f s: context %d, chat format %s",
                    model.entry.alias, info.model_id, engine_name, model.load_seconds, info.context_length, chat_format.name,
                )
                for hook in self.on_loaded:
                    try:
                        await hook(model)
                    except Exception:  # a hook's failure must not fail the load
                        logger.exception("model %s: after-load step failed", model.entry.alias)
                model.stage = "ready"
                return
            model.state, model.stage = ModelState.FAILED, "failed"
            model.failed_at = time.monotonic()
            model.failure = failures[0][1] if len(failures) == 1 else "; ".join(f"on {name}: {why}" for name, why in failures)

    def _engine_order(self, entry: ModelEntry) -> list[str]:
        if not self._fallback or not engine_kind(entry.engine).local:
            return [entry.engine]
        return [entry.engine, *(name for name in local_engine_names() if name != entry.engine)]

    async def _start(self, model: ManagedModel, entry: ModelEntry, fallback: bool) -> tuple[Engine, EngineInfo, ChatFormat]:
        engine: Engine | None = None
        try:
            model.stage = "preparing model"
            local = engine_kind(entry.engine).local
            # A remote model's name is the upstream's; there is no file here to prepare.
            path = await asyncio.to_thread(resolve_model, entry.model, self._settings.cache_dir) if local else entry.model
            engine = self._factory(entry, self._engine_config(model, entry, path))
            model.stage = f"loading model on {entry.engine} (fallback)" if fallback else "loading model"
            await engine.start()
            info = engine.info()
            return engine, info, resolve_chat_format(entry.chat_format, info.architecture, info.chat_template)
        except BaseException:
            if engine is not None:
                with contextlib.suppress(Exception):
                    await engine.close()
            raise

    async def _make_room(self, incoming: ManagedModel) -> None:
        """Unload the least recently used models beyond JARVIS_MAX_LOADED_MODELS. Remote models
        hold no memory here: they neither count nor make room."""
        if not engine_kind(incoming.serving_entry.engine).local:
            return
        while True:
            loaded = [
                m for m in self._models
                if m is not incoming and m.state == ModelState.LOADED and engine_kind(m.running_engine).local
            ]
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
        model.engine_kind = model.fallback = None
        model.stage = "unloading"
        if engine is not None:
            await engine.close()
        del engine
        _release_memory()
        model.state, model.stage = ModelState.UNLOADED, "unloaded"
        logger.info("model %s unloaded", model.entry.alias)

    # ---- changes at runtime: engine switch, registry changes -------------------------------

    async def switch_engine(self, engine_name: str, alias: str | None = None) -> tuple[ManagedModel, str]:
        """Serve `alias` (default: the default model) on `engine_name` from now on. Requests in
        flight finish on the old engine; then it is unloaded and the new one loaded."""
        old = self.by_alias(alias) if alias else self.default
        previous = old.running_engine
        if previous == engine_name and old.serving_entry.engine == engine_name:
            return old, previous
        new = ManagedModel(old.entry, engine_override=engine_name if engine_name != old.entry.engine else None)
        self._models[self._models.index(old)] = new
        self._reload(old, new)
        await asyncio.shield(new.transition)  # type: ignore[arg-type]
        return new, previous

    def apply_registry(self, entries: list[ModelEntry]) -> RegistryApplied:
        """Serve `entries` from now on. A loaded model whose engine, model, chat format, context
        or options changed is reloaded once its in-flight requests finish; a removed one is
        unloaded after them; other changes apply at once."""
        current = {model.entry.alias: model for model in self._models}
        models: list[ManagedModel] = []
        outcomes: dict[str, str] = {}
        reloading: list[ManagedModel] = []
        for entry in entries:
            model = current.pop(entry.alias, None)
            if model is None:
                models.append(ManagedModel(entry))
                outcomes[entry.alias] = "added"
            elif model.entry == entry:
                models.append(model)
                outcomes[entry.alias] = "unchanged"
            elif not _needs_reload(model.entry, entry):
                model.entry = entry
                models.append(model)
                outcomes[entry.alias] = "updated"
            else:
                # A runtime engine choice survives a change that leaves the entry's engine alone.
                override = model.engine_override if entry.engine == model.entry.engine else None
                replacement = ManagedModel(entry, engine_override=override)
                models.append(replacement)
                if model.state in (ModelState.LOADED, ModelState.LOADING):
                    self._reload(model, replacement)
                    reloading.append(replacement)
                    outcomes[entry.alias] = "reloaded"
                else:
                    self._retire_in_background(model)
                    outcomes[entry.alias] = "updated"
        for removed in current.values():
            self._retire_in_background(removed)
            outcomes[removed.entry.alias] = "removed"
        self._models = models
        if self._keep_alive_task is None:
            self.start_keep_alive()
        return RegistryApplied(outcomes, reloading)

    @staticmethod
    async def settled(models: list[ManagedModel]) -> None:
        """Wait until the loads or reloads of `models` have ended (loaded or failed)."""
        for model in models:
            if model.transition is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(model.transition)

    def _reload(self, old: ManagedModel, new: ManagedModel) -> None:
        new.state, new.stage = ModelState.LOADING, "waiting for the previous version's requests to finish"
        new.transition = asyncio.create_task(self._replace(old, new))

    async def _replace(self, old: ManagedModel, new: ManagedModel) -> None:
        await self._retire(old)
        new.stage = "waiting to load"
        await self._load(new)

    def _retire_in_background(self, model: ManagedModel) -> None:
        task = asyncio.create_task(self._retire(model))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, model: ManagedModel) -> None:
        if model.transition is not None and not model.transition.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(model.transition)
        if model.state == ModelState.LOADED:
            await self._unload(model)

    # ---- keep-alive ------------------------------------------------------------------------

    def start_keep_alive(self) -> None:
        if any(self.keep_alive_seconds(model) > 0 for model in self._models):
            self._keep_alive_task = asyncio.create_task(self._keep_alive_loop())

    def keep_alive_seconds(self, model: ManagedModel) -> float:
        """Idle seconds before `model` is unloaded (0 = never): its entry's, else JARVIS_KEEP_ALIVE_SECONDS."""
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
        return self.keep_alive_seconds(model) or None  # 0 in the registry means never

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

    def engine_options(self, entry: ModelEntry) -> dict[str, object]:
        """The options `entry` runs with: the server-wide values (JARVIS_...) overlaid by its own."""
        own = {name: value for name, value in entry.options.items() if value is not None}
        return {**self._settings.engine_defaults(engine_kind(entry.engine)), **own}

    def _engine_config(self, model: ManagedModel, entry: ModelEntry, model_path: str) -> EngineConfig:
        options = self.engine_options(entry)
        # Options EngineConfig has a field for go there; the rest travel in `options`.
        direct = {field.name for field in dataclasses.fields(EngineConfig)}
        fields = {name: options.pop(name) for name in list(options) if name in direct}
        return EngineConfig(
            model=model_path,
            context_size=entry.context_size or self._settings.context_size,
            cache_dir=str(self._settings.cache_dir),
            options=options,
            on_stage=lambda stage: setattr(model, "stage", stage),
            **fields,  # type: ignore[arg-type]
        )


def _needs_reload(old: ModelEntry, new: ModelEntry) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in ModelEntry.RELOAD_FIELDS)


def _fallback_note(failures: list[tuple[str, str]], engine_name: str) -> str | None:
    if not failures:
        return None
    tried = "; ".join(f"{name} could not start it ({why})" for name, why in failures)
    return f"{tried}; running on {engine_name} instead"


def _release_memory() -> None:
    """Give freed model memory back to the OS, so unloading shows in the process RSS."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name).malloc_trim(0)
