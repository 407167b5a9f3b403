from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from server.app import create_app
from server.process_tree import dies_with_this_process
from service.gguf_client import GGUFClient
from service.settings import Settings
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parent.parent

# Real Chromium for the settings-page tests, and the run's summary of whether they ran.
pytest_plugins = ("tests.browser",)


# ---- fast tier: the app over a fake engine ----------------------------------------------------


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


# The names the fast tier's clients give the app as Host ("http://test", "http://t"): a server
# without an API key answers only to names it is told (see server/host_check.py).
TEST_HOSTS = ["test", "t", "homeassistant-test"]
# The fast tier's cache directory: never the user's, whose registry file or audit log it must not read or write.
FAST_TIER_CACHE = Path(tempfile.gettempdir()) / f"jarvis-fast-tier-{os.getuid()}"


def make_settings(**overrides: object) -> Settings:
    """Settings for the fast tier: no .env, a model name the fake engine stands in for, the test
    clients' host names allowed, and a cache directory of its own."""
    defaults = {"model_name": "fake-model", "allowed_hosts": TEST_HOSTS, "cache_dir": FAST_TIER_CACHE}
    return Settings(_env_file=None, **{**defaults, **overrides})  # type: ignore[call-arg]


@pytest_asyncio.fixture
async def app_factory(fake_engine: FakeEngine):
    """Builds an app over the fake engine, runs its lifespan and waits until it is ready."""
    stack: list = []

    async def build(**overrides: object) -> FastAPI:
        settings = make_settings(**overrides)
        app = create_app(settings, GGUFClient(settings, engine=fake_engine))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        for _ in range(100):
            if app.state.client.ready:
                break
            await _sleep()
        return app

    yield build
    for lifespan in reversed(stack):
        await lifespan.__aexit__(None, None, None)


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def api(app_factory) -> AsyncIterator[httpx.AsyncClient]:
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


# ---- real tier: a live server on 127.0.0.1 with the packaged model ----------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    health_history: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def generating(self) -> float:
        """Sequences the server is generating right now, by its own count (jarvis_busy_slots in
        /metrics). A client's view of a stream cannot tell this: on a loaded machine vLLM's
        processes hand tokens over late and a stream can reach the client in bursts."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=30).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("jarvis_busy_slots{"))

    def warnings_logged(self, last: int = 10) -> str:
        """The server log's last errors and the server's own warnings (vLLM's processes, whose lines
        start with their name in brackets, warn about their set-up at every start), for a failure
        message: what the server said, a stalled event loop among it, while a check failed."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        said = [line for line in lines if "ERROR" in line or ("WARNING" in line and not line.startswith("("))]
        return "the server's warnings:\n" + "\n".join(said[-last:])

    def generating_after_waiting(self, expected: float, timeout: float = 60) -> float:
        """The server's count once it is `expected`, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (count := self.generating()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return count

    def wait_until_generating(self, expected: float, timeout: float = 60) -> None:
        count = self.generating_after_waiting(expected, timeout)
        assert count == expected, f"the server generates {count} sequences, not {expected}, after {timeout} s"


def start_live_server(tmp_dir: Path, port: int | None = None, **env_overrides: str) -> LiveServer:
    """`python main.py` (the supervisor and its server process) on a free port (or `port`), once
    /health is 200. The server dies with this test process, however it ends (SIGKILL included):
    call it from the main thread."""
    port = port or free_port()
    # Explicit values beat a developer's .env; inherited JARVIS_ variables are dropped.
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("JARVIS_") and key != "DEBUG"}
    env = {
        **inherited,
        "JARVIS_HOST": "127.0.0.1",
        "JARVIS_PORT": str(port),
        "JARVIS_MODEL_NAME": "",
        "JARVIS_CHAT_FORMAT": "auto",
        "JARVIS_API_KEY": "",
        # Test servers start cold unless a test asks for the persistent prompt cache: greedy
        # comparisons depend on the cache state a server starts with.
        "JARVIS_PROMPT_CACHE_DISK_MB": "0",
        **env_overrides,
    }
    log_path = tmp_dir / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=dies_with_this_process(),
    )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            response = httpx.get(f"{server.base_url}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        server.health_history.append((response.status_code, response.json()))
        if response.status_code == 200:
            return server
        time.sleep(0.02 if len(server.health_history) < 50 else 0.5)  # fine-grained while a fast engine loads
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


def stop_live_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One llama.cpp server for the whole session (small context keeps overflow tests cheap)."""
    server = start_live_server(
        tmp_path_factory.mktemp("llama"),
        JARVIS_INFERENCE_ENGINE="llama_cpp",
        JARVIS_CONTEXT_SIZE="2048",
        JARVIS_MODEL_ALIAS="jarvis",
    )
    yield server
    stop_live_server(server)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One vLLM (CPU) server for the whole session, on the packaged GGUF converted once into the
    user's cache. Same context and alias as the llama.cpp server, so the same tests hold."""
    server = start_live_server(
        tmp_path_factory.mktemp("vllm"),
        JARVIS_INFERENCE_ENGINE="vllm",
        JARVIS_CONTEXT_SIZE="2048",
        JARVIS_VLLM_MAX_MODEL_LEN="2048",
        JARVIS_MODEL_ALIAS="jarvis",
    )
    yield server
    stop_live_server(server)


@pytest.fixture(scope="session", params=[pytest.param("llama_cpp"), pytest.param("vllm", marks=pytest.mark.vllm)])
def live_server(request: pytest.FixtureRequest) -> LiveServer:
    """The live server of each engine, for tests that must hold on all of them."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def llama_cpp_server(llama_server: LiveServer) -> LiveServer:
    return llama_server


ADMIN_KEY = "admin-secret"
API_KEY = "inference-secret"


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server with two registry entries on the packaged model, an admin key and an API key."""
    folder = tmp_path_factory.mktemp("registry")
    models_file = folder / "models.yaml"
    models_file.write_text(
        "models:\n"
        "  - {alias: primary, engine: llama_cpp, context_size: 1024}\n"
        "  - {alias: secondary, engine: llama_cpp, context_size: 1024, keep_alive_seconds: 2}\n"
    )
    server = start_live_server(
        folder,
        JARVIS_MODELS_FILE=str(models_file),
        JARVIS_ADMIN_KEY=ADMIN_KEY,
        JARVIS_API_KEY=API_KEY,
        JARVIS_AUDIT_LOG=str(folder / "audit.log"),
    )
    server.audit_log = folder / "audit.log"  # type: ignore[attr-defined]
    yield server
    stop_live_server(server)
