"""Fast-tier rig for remote models: a proxy app whose remote model's upstreams are other apps of
this server, each over a fake engine, reached in process through an httpx transport that routes
by host name (and refuses hosts marked down, as a dead server would)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backends.remote.engine import RemoteEngine
from server.app import create_app
from service.gguf_client import GGUFClient
from tests.conftest import make_settings
from tests.fakes import FakeEngine

ADMIN = {"Authorization": "Bearer admin-secret"}


class Hosts(httpx.AsyncBaseTransport):
    """Routes each upstream host to an app in this process; a host in `down` refuses connections."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.down: set[str] = set()
        self.broken: dict[str, int] = {}  # host -> the status its /v1/completions answers
        self.seen: list[tuple[str, str]] = []  # (host, path) of every request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.seen.append((host, request.url.path))
        if host in self.down or host not in self.apps:
            raise httpx.ConnectError(f"[Errno 111] Connection refused ({host})", request=request)
        if host in self.broken and request.url.path == "/v1/completions":
            return httpx.Response(self.broken[host], json={"error": {"message": "the engine core died", "type": "server_error"}})
        return await self.apps[host].handle_async_request(request)

    def completions_on(self, host: str) -> int:
        return sum(1 for seen_host, path in self.seen if seen_host == host and path == "/v1/completions")


@dataclass
class Rig:
    client: httpx.AsyncClient
    hosts: Hosts
    upstreams: dict[str, FakeEngine]
    local: FakeEngine
    app: object
    engines: list[RemoteEngine] = field(default_factory=list)


def remote_registry(upstreams: tuple[str, ...], fallback: bool = True, options: str = "") -> str:
    listed = ", ".join(f"{{base_url: 'http://{host}/v1'}}" for host in upstreams)
    return (
        "models:\n"
        "  - {alias: local, engine: llama_cpp}\n"
        "  - alias: remote\n"
        "    engine: openai\n"
        "    model: jarvis\n"
        + ("    fallback: local\n" if fallback else "")
        + f"    options: {{flavour: jarvis, health_interval: 0.05, upstreams: [{listed}]{options}}}\n"
    )


@contextlib.asynccontextmanager
async def remote_rig(tmp_path: Path, upstreams: tuple[str, ...] = ("up-a", "up-b"), registry: str | None = None) -> AsyncIterator[Rig]:
    hosts = Hosts()
    engines: dict[str, FakeEngine] = {}
    async with contextlib.AsyncExitStack() as stack:
        for host in upstreams:
            engine = FakeEngine(context_length=2048)
            settings = make_settings(allowed_hosts=["*"], model_alias="jarvis")
            upstream_app = create_app(settings, GGUFClient(settings, engine=engine))
            await stack.enter_async_context(upstream_app.router.lifespan_context(upstream_app))
            await _ready(upstream_app)
            hosts.apps[host] = httpx.ASGITransport(app=upstream_app)
            engines[host] = engine
        local = FakeEngine()
        made: list[RemoteEngine] = []

        def factory(entry, config):  # type: ignore[no-untyped-def]
            if entry.engine == "openai":
                made.append(RemoteEngine(config, transport=hosts))
                return made[-1]
            return local

        models_file = tmp_path / "models.yaml"
        models_file.write_text(registry or remote_registry(upstreams))
        settings = make_settings(models_file=models_file, admin_key="admin-secret", audit_log=tmp_path / "audit.log")
        app = create_app(settings, GGUFClient(settings, engine_factory=factory))
        await stack.enter_async_context(app.router.lifespan_context(app))
        await _ready(app)
        client = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t"))
        yield Rig(client, hosts, engines, local, app, made)


async def _ready(app: object) -> None:
    for _ in range(200):
        if app.state.client.ready:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app did not become ready")


async def upstream_states(rig: Rig) -> dict[str, bool]:
    status = (await rig.client.get("/admin/status", headers=ADMIN)).json()
    remote = next(model for model in status["models"] if model["alias"] == "remote")
    return {upstream["name"]: upstream["healthy"] for upstream in remote["engine_stats"]["upstreams"]}


async def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
