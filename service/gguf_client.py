"""GGUFClient: the runtime facade. It picks the engine named by JARVIS_INFERENCE_ENGINE, owns the
models and their engines (load, unload, switch, keep-alive), the metrics and the audit trail, and
says whether the server can serve. Requests go through the generation core (`core/`), which asks
this facade for a model lease; the facade knows nothing of protocols or HTTP."""

from __future__ import annotations

import logging
import time

from backends import choose_engine
from backends.base import Engine
from service.audit import AuditLog
from service.metrics import Metrics
from service.model_manager import EngineFactory, ManagedModel, ModelManager, ModelState
from service.model_registry import load_registry
from service.settings import Settings

logger = logging.getLogger(__name__)


class GGUFClient:
    """`engine` (tests) serves every registry entry with one given engine."""

    def __init__(
        self, settings: Settings, engine: Engine | None = None, engine_factory: EngineFactory | None = None
    ) -> None:
        engine_setting, self.engine_choice_reason = choose_engine(settings.inference_engine)
        if engine_setting != settings.inference_engine:
            settings = settings.model_copy(update={"inference_engine": engine_setting})
            logger.info("engine chosen: %s (%s)", engine_setting, self.engine_choice_reason)
        self.settings = settings
        if engine is not None:
            engine_factory = lambda entry, config: engine  # noqa: E731
        self.models = ModelManager(settings, load_registry(settings), engine_factory)
        self.metrics = Metrics(lambda: self.models.models)
        self.audit = AuditLog(settings.audit_log_path)
        self.started_at = time.time()
        self.stage = "starting"
        self._failure: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def failure(self) -> str | None:
        """Why the server cannot serve: a failed start, or the default model's engine broke."""
        if self._failure is not None:
            return self._failure
        default = self.models.default
        return default.engine_failure() if default.state == ModelState.LOADED else None

    @property
    def ready(self) -> bool:
        return self.stage == "ready" and self.failure is None

    @property
    def engine_name(self) -> str:
        return self.models.default.running_engine

    @property
    def loading_stage(self) -> str:
        return self.models.default.stage if self.stage == "starting" else self.stage

    async def start(self) -> None:
        """Load the default model; the server is ready when it is."""
        default = self.models.default
        await self.models.start_loading(default)
        if default.state != ModelState.LOADED and default.entry.fallback is not None:
            # A remote default whose upstreams are not up yet: its fallback serves meanwhile.
            logger.warning("default model %s did not load (%s): starting its fallback %s", default.entry.alias, default.failure, default.entry.fallback)
            fallback = self.models.by_alias(default.entry.fallback)
            await self.models.start_loading(fallback)
            if fallback.state == ModelState.LOADED:
                self.stage = "ready"
                self.models.start_keep_alive()
                return
        if default.state != ModelState.LOADED:
            self.stage = "failed"
            self._failure = default.failure
            raise RuntimeError(default.failure)
        self.stage = "ready"
        self.models.start_keep_alive()

    async def close(self) -> None:
        await self.models.close()
        self.stage = "stopped"

    # ---- models ----------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """Every name a request may use, entry by entry."""
        return [name for model in self.models.models for name in model.entry.names()]

    def model_cards(self) -> list[tuple[str, ManagedModel]]:
        return [(name, model) for model in self.models.models for name in model.entry.names()]
