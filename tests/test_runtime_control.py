"""Fast tier: the model registry, on-demand loading and unloading, the admin API, the audit
trail, metrics and embeddings, over fake engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from backends import choose_engine
from server.app import create_app
from service.gguf_client import GGUFClient
from service.model_registry import RegistryError, read_models_file
from tests.conftest import make_settings
from tests.fakes import EngineError, FakeEngine
from tests.test_api import CHAT, assert_error, sse_events

MODELS_YAML = """
models:
  - alias: small
    engine: llama_cpp
    model: org/small-model
    aliases: [tiny]
    options: {parallel: 2}
  - alias: large
    engine: llama_cpp
    model: org/large-model
    keep_alive_seconds: 0.3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


# ---- registry -------------------------------------------------------------------------------


def test_models_file_entries(tmp_path: Path) -> None:
    entries = read_models_file(write(tmp_path, MODELS_YAML))
    assert [entry.alias for entry in entries] == ["small", "large"]
    assert entries[0].names() == ("small", "tiny")
    assert entries[0].options == {"parallel": 2}
    assert entries[1].keep_alive_seconds == 0.3


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("models:\n  - alias: a\n    engine: onnx\n", "entry 1 ('a'): field engine"),
        ("models:\n  - alias: a\n    engine: llama_cpp\n    options: {tensor_parallel_size: 2}\n", "field options.tensor_parallel_size: not an option of the llama_cpp engine"),
        ("models:\n  - alias: a\n    engine: vllm\n    options: {gpu_memory_utilization: lots}\n", "entry 1 ('a'): field options.gpu_memory_utilization: must be float, got 'lots'"),
        ("models:\n  - alias: a\n    engine: llama_cpp\n  - alias: a\n    engine: vllm\n", "entry 2 ('a'): field alias: 'a' is already used by entry 1"),
        ("models:\n  - engine: llama_cpp\n", "entry 1: field alias"),
        ("models:\n  - alias: a\n    engine: llama_cpp\n    colour: red\n", "field colour"),
        ("models: 5\n", "expected a non-empty list"),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_models_file_errors_name_entry_and_field(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(RegistryError) as raised:
        read_models_file(write(tmp_path, text))
    assert says in str(raised.value)


# ---- several models --------------------------------------------------------------------------


class EngineShop:
    """Makes one fake engine per load and remembers them all."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, FakeEngine]] = []
        self.configs: list[tuple[str, str, object]] = []
        self.start_gate: asyncio.Event | None = None
        self.failing: dict[str, str] = {}  # engine kind -> why it cannot start a model

    def __call__(self, entry, config) -> FakeEngine:
        if entry.engine in self.failing:
            raise EngineError(self.failing[entry.engine])
        self.configs.append((entry.alias, entry.engine, config))
        engine = FakeEngine()
        engine.name = entry.engine
        engine._info = engine._info.__class__(**{**engine._info.__dict__, "model_id": entry.alias})
        gate = self.start_gate
        if gate is not None:
            original = engine.start

            async def gated_start() -> None:
                await gate.wait()
                await original()

            engine.start = gated_start  # type: ignore[method-assign]
        self.made.append((entry.alias, entry.engine, engine))
        return engine

    def latest(self, alias: str) -> FakeEngine:
        return [engine for name, _, engine in self.made if name == alias][-1]


async def start_app(tmp_path: Path, shop: EngineShop, **settings_fields: object):
    settings = make_settings(audit_log=tmp_path / "audit.log", **settings_fields)
    app = create_app(settings, GGUFClient(settings, engine_factory=shop))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    for _ in range(200):
        if app.state.client.ready:
            break
        await asyncio.sleep(0.01)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return app, client, lifespan


@pytest.fixture
async def registry_app(tmp_path: Path):
    shop = EngineShop()
    app, client, lifespan = await start_app(tmp_path, shop, models_file=write(tmp_path, MODELS_YAML))
    yield app, client, shop
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


def states(data: dict) -> dict[str, str]:
    return {card["id"]: card["state"] for card in data["data"]}


async def test_models_lists_every_entry_with_its_state(registry_app) -> None:
    _, client, _ = registry_app
    data = (await client.get("/v1/models")).json()
    assert states(data) == {"small": "loaded", "tiny": "loaded", "large": "unloaded"}


async def test_unknown_model_with_several_configured_is_404(registry_app) -> None:
    _, client, _ = registry_app
    error = assert_error(await client.post(CHAT, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}), 404)
    assert error["code"] == "model_not_found"


async def test_named_model_loads_on_demand_and_unloads_the_least_recent(registry_app) -> None:
    _, client, shop = registry_app
    response = await client.post(CHAT, json={"model": "large", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert response.json()["model"] == "large"
    assert states((await client.get("/v1/models")).json()) == {"small": "unloaded", "tiny": "unloaded", "large": "loaded"}
    assert shop.latest("small").closes == 1  # only one model loaded at a time by default


async def test_keep_alive_unloads_an_idle_model(registry_app) -> None:
    _, client, _ = registry_app
    await client.post(CHAT, json={"model": "large", "messages": [{"role": "user", "content": "x"}]})
    for _ in range(100):
        if states((await client.get("/v1/models")).json())["large"] == "unloaded":
            break
        await asyncio.sleep(0.05)
    assert states((await client.get("/v1/models")).json())["large"] == "unloaded"


async def test_loading_another_model_waits_for_in_flight_requests(registry_app) -> None:
    _, client, shop = registry_app
    small = shop.latest("small")
    small.delay = 0.05
    small.queue("a", "b", "c", "d", "e", "f")
    stream = asyncio.create_task(client.post(CHAT, json={"model": "small", "stream": True, "messages": [{"role": "user", "content": "x"}]}))
    await asyncio.sleep(0.08)
    other = await client.post(CHAT, json={"model": "large", "messages": [{"role": "user", "content": "x"}]})
    assert other.status_code == 200
    events = sse_events(await stream)
    text = "".join(event["choices"][0]["delta"].get("content", "") for event in events[:-1] if event["choices"])
    assert text == "abcdef", "the running stream was cut"
    assert small.closed_early == 0


async def test_model_start_timeout_gives_503(tmp_path: Path) -> None:
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=write(tmp_path, MODELS_YAML), model_start_timeout=0.2)
    try:
        shop.start_gate = asyncio.Event()  # the next load hangs
        response = await client.post(CHAT, json={"model": "large", "messages": [{"role": "user", "content": "x"}]})
        assert_error(response, 503, says="did not load within")
        shop.start_gate.set()
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


# ---- admin API --------------------------------------------------------------------------------


@pytest.fixture
async def admin_app(tmp_path: Path):
    shop = EngineShop()
    app, client, lifespan = await start_app(tmp_path, shop, models_file=write(tmp_path, MODELS_YAML), admin_key="boss", api_key="user")
    yield app, client, shop, tmp_path / "audit.log"
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


ADMIN = {"Authorization": "Bearer boss"}


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_admin_is_off_without_an_admin_key(registry_app) -> None:
    _, client, _ = registry_app
    assert_error(await client.get("/admin/status"), 403, says="JARVIS_ADMIN_KEY")


async def test_admin_refuses_no_key_and_the_inference_key(admin_app) -> None:
    _, client, _, _ = admin_app
    assert_error(await client.get("/admin/status"), 401)
    assert_error(await client.get("/admin/status", headers={"Authorization": "Bearer user"}), 401)
    assert (await client.get("/admin/status", headers=ADMIN)).status_code == 200


async def test_admin_status(admin_app) -> None:
    _, client, _, _ = admin_app
    status = (await client.get("/admin/status", headers=ADMIN)).json()
    assert status["engine"] == "llama_cpp"
    assert status["process_rss_bytes"] > 0 and status["uptime_seconds"] >= 0
    small = next(model for model in status["models"] if model["alias"] == "small")
    assert small["state"] == "loaded" and small["engine_stats"]["parallel"] == 4


async def test_admin_load_unload_and_audit(admin_app) -> None:
    _, client, shop, audit = admin_app
    loaded = await client.post("/admin/models/large/load", headers=ADMIN)
    assert loaded.json()["state"] == "loaded"
    unloaded = await client.post("/admin/models/large/unload", headers=ADMIN)
    assert unloaded.json()["state"] == "unloaded"
    assert shop.latest("large").closes == 1
    assert_error(await client.post("/admin/models/nope/load", headers=ADMIN), 404)
    lines = audit_lines(audit)
    assert [(line["action"], line["from"], line["to"]) for line in lines] == [
        ("load large", "unloaded", "loaded"),
        ("unload large", "loaded", "unloaded"),
    ]
    assert all(line["key"].startswith("key-") and "boss" not in json.dumps(line) for line in lines)


async def test_engine_switch_lets_the_running_stream_finish(admin_app, tmp_path: Path) -> None:
    _, client, shop, audit = admin_app
    old = shop.latest("small")
    old.delay = 0.05
    old.queue("o", "l", "d", "!")
    headers = {"Authorization": "Bearer user"}
    stream = asyncio.create_task(client.post(CHAT, headers=headers, json={"model": "small", "stream": True, "messages": [{"role": "user", "content": "x"}]}))
    await asyncio.sleep(0.07)
    switched = await client.post("/admin/engine", headers=ADMIN, json={"engine": "vllm", "model": "small"})
    assert switched.json()["from"] == "llama_cpp" and switched.json()["to"] == "vllm"
    events = sse_events(await stream)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]) == "old!"
    after = await client.post(CHAT, headers=headers, json={"model": "small", "messages": [{"role": "user", "content": "x"}]})
    assert after.status_code == 200
    assert shop.made[-1][:2] == ("small", "vllm")
    assert len(shop.latest("small").requests) == 1  # the new request ran on the new engine
    assert old.closes == 1
    assert audit_lines(audit)[-1]["action"] == "switch engine of small"


async def test_parse_command_route(admin_app) -> None:
    _, client, _, audit = admin_app
    response = await client.post("/admin/parse-command", headers=ADMIN, json={"command": "vllm serve Qwen/Qwen2.5-0.5B-Instruct --max-model-len 8192"})
    assert response.status_code == 200
    assert response.json()["entry"]["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert_error(await client.post("/admin/parse-command", headers=ADMIN, json={"command": "vllm serve 'unterminated"}), 400, param="command")
    assert audit_lines(audit)[-1]["action"] == "parse-command"


# ---- metrics and embeddings ---------------------------------------------------------------


async def test_metrics_count_requests_and_tokens(api, fake_engine) -> None:
    fake_engine.queue("a", "b")
    await api.post(CHAT, json={"messages": [{"role": "user", "content": "x"}]})
    text = (await api.get("/metrics")).text
    assert 'jarvis_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'jarvis_generated_tokens_total{model="fake-model"} 2.0' in text
    assert 'jarvis_time_to_first_token_seconds_count{model="fake-model"} 1.0' in text
    assert 'jarvis_model_state{model="fake-model",state="loaded"} 1.0' in text


async def test_metrics_can_require_the_api_key(app_factory) -> None:
    app = await app_factory(api_key="k", metrics_require_key=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.get("/metrics"), 401)
        assert (await client.get("/metrics", headers={"Authorization": "Bearer k"})).status_code == 200


async def test_embeddings_shape_and_determinism(api) -> None:
    first = (await api.post("/v1/embeddings", json={"model": "x", "input": ["turn on", "turn off"]})).json()
    again = (await api.post("/v1/embeddings", json={"model": "x", "input": ["turn on", "turn off"]})).json()
    assert first["object"] == "list" and [item["index"] for item in first["data"]] == [0, 1]
    assert first["data"][0]["embedding"] == again["data"][0]["embedding"]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
    assert first["usage"]["prompt_tokens"] == len("turn on") + len("turn off")
    single = (await api.post("/v1/embeddings", json={"input": "turn on", "encoding_format": "base64"})).json()
    assert isinstance(single["data"][0]["embedding"], str)


async def test_embeddings_on_an_engine_that_cannot_embed_is_400(app_factory, fake_engine) -> None:
    import dataclasses

    fake_engine._info = dataclasses.replace(fake_engine._info, capabilities=dataclasses.replace(fake_engine._info.capabilities, embeddings=False))
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert_error(await client.post("/v1/embeddings", json={"input": "x"}), 400, says="cannot make embeddings")


@pytest.mark.parametrize(
    ("vllm_installed", "gpu", "expected"),
    [
        (True, True, ("vllm", "auto: vLLM is installed and an NVIDIA GPU is present")),
        (True, False, ("llama_cpp", "auto: no NVIDIA GPU is present, so llama.cpp")),
        (False, True, ("llama_cpp", "auto: vLLM is not installed, so llama.cpp")),
    ],
)
def test_auto_engine_explains_its_choice(monkeypatch: pytest.MonkeyPatch, vllm_installed: bool, gpu: bool, expected: tuple[str, str]) -> None:
    import backends

    monkeypatch.setattr(backends, "vllm_installed", lambda: vllm_installed)
    monkeypatch.setattr(backends, "nvidia_gpu_present", lambda: gpu)
    assert choose_engine("auto") == expected
    assert choose_engine("llama_cpp") == ("llama_cpp", "JARVIS_INFERENCE_ENGINE=llama_cpp")
