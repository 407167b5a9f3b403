"""create_app(): the FastAPI application. Settings are read here, not at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from core.generation import GenerationCore
from core.prompt import prepare_rendering
from core.warm_prompts import WarmPrompts
from protocols.anthropic import routes as anthropic_routes
from protocols.ollama import routes as ollama_routes
from protocols.openai import routes as openai_routes
from protocols.responses import routes as responses_routes
from protocols.responses.store import ResponseStore
from server.dependencies import require_api_key
from server.errors import install_error_handlers
from server.loop_watchdog import watch_event_loop
from server.metrics_middleware import MetricsMiddleware
from server.routes import admin, admin_registry, health, metrics, page
from server.security import docs_options, install_security
from service.gguf_client import GGUFClient
from service.metrics_history import MetricsHistory
from service.model_facts import ModelFactsCache
from service.settings import Settings, load_settings

logger = logging.getLogger(__name__)


async def _load_model(app: FastAPI, client: GGUFClient) -> None:
    try:
        await client.start()
    except Exception:
        logger.critical("the model could not be loaded: %s", client.failure)
        app.state.startup_failure = client.failure
        # The server cannot serve anything useful: stop it; main.py exits non-zero.
        shutdown = getattr(app.state, "request_shutdown", None)
        if shutdown is not None:
            shutdown()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    client: GGUFClient = app.state.client
    # Load in the background so /health answers 503 with the stage while the model loads.
    loading = asyncio.create_task(_load_model(app, client))
    sampling = asyncio.create_task(app.state.metrics_history.run())
    watching = asyncio.create_task(watch_event_loop())
    try:
        yield
    finally:
        for task in (loading, sampling, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.close()


def create_app(settings: Settings | None = None, client: GGUFClient | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="Jarvis LLM Proxy", version="0.1.0", lifespan=_lifespan, **docs_options(settings))
    app.state.settings = settings
    app.state.client = client or GGUFClient(settings)
    app.state.core = GenerationCore(app.state.client)
    app.state.client.models.on_loaded += [prepare_rendering, WarmPrompts(app.state.core).after_load]
    app.state.response_store = ResponseStore(settings.responses_store_size)
    app.state.started_at = int(time.time())
    app.state.model_facts = ModelFactsCache(settings.cache_dir)
    app.state.metrics_history = MetricsHistory(app.state.client.metrics)
    app.state.startup_failure = None
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.client.metrics)
    install_security(app, settings)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    app.include_router(admin_registry.router)
    page.install(app)
    protected = [Depends(require_api_key)]
    for protocol in (openai_routes, anthropic_routes, responses_routes, ollama_routes):
        app.include_router(protocol.router, dependencies=protected)
    app.include_router(ollama_routes.root_router)  # `/`: "Ollama is running", open like /health
    return app
