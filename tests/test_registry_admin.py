"""Fast tier: the registry at runtime through the admin API (create, change with a reload while a
stream runs, delete), the file after each step, concurrent changes, a crash before the rename,
a .env-only server writing its first registry, /admin/backends and the engine fallback, over
fake engines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from service.model_registry import RegistryError, read_models_file
from service.settings import SettingsError, load_settings
from tests.conftest import ROOT
from tests.test_api import CHAT, assert_error, sse_events
from tests.test_runtime_control import EngineShop, audit_lines, start_app

ADMIN = {"Authorization": "Bearer boss"}

COMMENTED_YAML = """\
# The house models. This comment stays.
models:
  - alias: small          # the everyday one
    engine: llama_cpp
    model: org/small-model
    options: {parallel: 2}
  - {alias: large, engine: llama_cpp, model: org/large-model}
"""


@pytest.fixture
async def registry(tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text(COMMENTED_YAML)
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, models_file=path, admin_key="boss")
    yield client, shop, path, tmp_path / "audit.log"
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


async def test_list_models_shows_entries_state_and_effective_options(registry) -> None:
    client, _, path, _ = registry
    listing = (await client.get("/admin/models", headers=ADMIN)).json()
    assert listing["registry"] == {"path": str(path), "source": "JARVIS_MODELS_FILE"}
    small, large = listing["models"]
    assert (small["alias"], small["state"], large["state"]) == ("small", "loaded", "unloaded")
    assert small["entry"] == {"alias": "small", "engine": "llama_cpp", "model": "org/small-model", "options": {"parallel": 2}}
    # the entry's own option over the server-wide defaults (JARVIS_PARALLEL and friends)
    assert small["effective_options"] == {"n_gpu_layers": 0, "parallel": 2, "max_queue": 16, "prompt_cache_disk_mb": 1024, "prompt_cache_ram_mb": 512}


async def test_create_persists_keeps_comments_and_is_audited(registry) -> None:
    client, _, path, audit = registry
    new = {"alias": "coder", "engine": "vllm", "model": "org/coder", "options": {"max_model_len": 8192}}
    response = await client.post("/admin/models", headers=ADMIN, json=new)
    assert response.status_code == 201, response.text
    assert response.json()["created"] == "coder" and response.json()["state"] == "unloaded"
    text = path.read_text()
    assert "# The house models. This comment stays." in text and "# the everyday one" in text
    assert "- {alias: large, engine: llama_cpp, model: org/large-model}" in text  # untouched entry as it was
    assert [entry.alias for entry in read_models_file(path)] == ["small", "large", "coder"]
    assert read_models_file(path)[2].options == {"max_model_len": 8192}
    assert path.with_name("models.yaml.bak").read_text() == COMMENTED_YAML
    line = audit_lines(audit)[-1]
    assert (line["action"], line["from"], line["to"]) == ("create model coder", None, new)


@pytest.mark.parametrize(
    ("entry", "param", "says"),
    [
        ({"alias": "x", "engine": "vllm", "options": {"gpu_memory_utilization": "lots"}}, "options.gpu_memory_utilization", "must be float, got 'lots'"),
        ({"alias": "x", "engine": "vllm", "options": {"gpu_memory_utilization": 1.5}}, "options.gpu_memory_utilization", "at most 1"),
        ({"alias": "x", "engine": "llama_cpp", "options": {"tensor_parallel_size": 2}}, "options.tensor_parallel_size", "not an option of the llama_cpp engine"),
        ({"alias": "x", "engine": "onnx"}, "engine", "field engine"),
        ({"alias": "x", "engine": "llama_cpp", "colour": "red"}, "colour", "field colour"),
        ({"engine": "llama_cpp"}, "alias", "field alias"),
        ({"alias": "small", "engine": "llama_cpp"}, "alias", "'small' is already an entry"),
        ({"alias": "x", "aliases": ["large"], "engine": "llama_cpp"}, "alias", "'large' is already used by entry 2"),
    ],
)
async def test_bad_entries_are_400_naming_the_field_and_change_nothing(registry, entry: dict, param: str, says: str) -> None:
    client, _, path, _ = registry
    assert_error(await client.post("/admin/models", headers=ADMIN, json=entry), 400, param=param, says=says)
    assert path.read_text() == COMMENTED_YAML


async def test_malformed_bodies_are_400(registry) -> None:
    client, _, path, _ = registry
    assert_error(await client.post("/admin/models", headers={**ADMIN, "Content-Type": "application/json"}, content=b"{not json"), 400, says="not valid JSON")
    assert_error(await client.post("/admin/models", headers=ADMIN, json=["a"]), 400)
    assert_error(await client.put("/admin/models/small", headers=ADMIN, json={}), 400, says="non-empty")
    assert_error(await client.put("/admin/models/nope", headers=ADMIN, json={"max_tokens": 3}), 404)
    assert_error(await client.delete("/admin/models/nope", headers=ADMIN), 404)
    assert path.read_text() == COMMENTED_YAML


async def test_change_reloads_a_loaded_model_after_its_running_stream(registry) -> None:
    client, shop, path, audit = registry
    old = shop.latest("small")
    old.delay = 0.05
    old.queue("s", "t", "r", "e", "a", "m")
    stream = asyncio.create_task(client.post(CHAT, json={"model": "small", "stream": True, "messages": [{"role": "user", "content": "x"}]}))
    await asyncio.sleep(0.08)
    changed = await client.put("/admin/models/small", headers=ADMIN, json={"options": {"parallel": 3, "n_threads": 1}, "context_size": 2048})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["outcome"], body["reloaded"], body["state"]) == ("reloaded", True, "loaded")
    events = sse_events(await stream)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]) == "stream"
    assert old.closed_early == 0 and old.closes == 1
    alias, _, config = shop.configs[-1]
    assert (alias, config.parallel, config.n_threads, config.context_size) == ("small", 3, 1, 2048)
    entry = read_models_file(path)[0]
    assert entry.options == {"parallel": 3, "n_threads": 1} and entry.context_size == 2048
    assert "# the everyday one" in path.read_text()
    line = audit_lines(audit)[-1]
    assert line["action"] == "update model small"
    assert line["from"]["options"] == {"parallel": 2} and line["to"]["options"] == {"parallel": 3, "n_threads": 1}
    after = await client.post(CHAT, json={"model": "small", "messages": [{"role": "user", "content": "x"}]})
    assert after.status_code == 200 and shop.latest("small") is not old


async def test_change_without_reload_and_option_removal(registry) -> None:
    client, shop, path, _ = registry
    engines_before = len(shop.made)
    body = (await client.put("/admin/models/small", headers=ADMIN, json={"max_tokens": 7, "aliases": ["tiny"]})).json()
    assert (body["outcome"], body["reloaded"], body["state"]) == ("updated", False, "loaded")
    assert len(shop.made) == engines_before
    assert (await client.post(CHAT, json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})).status_code == 200
    removed = (await client.put("/admin/models/small", headers=ADMIN, json={"options": {"parallel": None}})).json()
    assert removed["entry"].get("options") is None and removed["outcome"] == "reloaded"
    assert read_models_file(path)[0].options == {}


async def test_unloaded_model_changes_without_loading(registry) -> None:
    client, shop, _, _ = registry
    body = (await client.put("/admin/models/large", headers=ADMIN, json={"engine": "vllm", "options": {"max_model_len": 4096}})).json()
    assert (body["outcome"], body["reloaded"], body["state"], body["engine"]) == ("updated", False, "unloaded", "vllm")
    assert "large" not in [alias for alias, _, _ in shop.made]


async def test_delete_unloads_and_persists(registry) -> None:
    client, shop, path, audit = registry
    deleted = (await client.delete("/admin/models/small", headers=ADMIN)).json()
    assert deleted == {**deleted, "deleted": "small", "unloading": True}
    assert [entry.alias for entry in read_models_file(path)] == ["large"]
    await asyncio.sleep(0.05)
    assert shop.latest("small").closes == 1
    models = (await client.get("/admin/models", headers=ADMIN)).json()["models"]
    assert [model["alias"] for model in models] == ["large"]
    assert_error(await client.delete("/admin/models/large", headers=ADMIN), 400, param="alias", says="only entry")
    assert audit_lines(audit)[-1]["action"] == "delete model small"


async def test_concurrent_changes_all_land(registry) -> None:
    client, _, path, audit = registry
    creates = [client.post("/admin/models", headers=ADMIN, json={"alias": f"m{i}", "engine": "llama_cpp"}) for i in range(8)]
    updates = [client.put("/admin/models/large", headers=ADMIN, json={"max_tokens": 10 + i}) for i in range(4)]
    responses = await asyncio.gather(*creates, *updates)
    assert [response.status_code for response in responses] == [201] * 8 + [200] * 4
    aliases = [entry.alias for entry in read_models_file(path)]
    assert sorted(aliases) == sorted(["small", "large", *(f"m{i}" for i in range(8))])
    assert read_models_file(path)[1].max_tokens in {10, 11, 12, 13}
    listed = [model["alias"] for model in (await client.get("/admin/models", headers=ADMIN)).json()["models"]]
    assert listed == aliases
    assert len([line for line in audit_lines(audit) if line["action"].startswith(("create", "update"))]) == 12


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(COMMENTED_YAML)
    crash = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from service.registry_edits import create_entry
from service.registry_file import RegistryFile
os.replace = lambda *args: os._exit(9)  # the process dies after writing and fsync, before the rename
create_entry(RegistryFile(Path({str(path)!r})), [], {{"alias": "new", "engine": "llama_cpp"}})
"""
    result = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    assert path.read_text() == COMMENTED_YAML
    assert [entry.alias for entry in read_models_file(path)] == ["small", "large"]
    leftovers = list(tmp_path.glob(".models.yaml*.tmp"))
    assert leftovers, "the crash happened after the temporary file was written"
    from service.registry_edits import create_entry
    from service.registry_file import RegistryFile

    create_entry(RegistryFile(path), [], {"alias": "new", "engine": "llama_cpp"})  # the next change cleans up
    assert [entry.alias for entry in read_models_file(path)] == ["small", "large", "new"]
    assert not list(tmp_path.glob(".models.yaml*.tmp"))


async def test_env_only_server_writes_its_registry_and_the_next_start_reads_it(tmp_path: Path) -> None:
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, cache_dir=tmp_path, admin_key="boss", model_alias="jarvis")
    try:
        assert (await client.get("/admin/status", headers=ADMIN)).json()["registry"]["source"].startswith(".env")
        created = await client.post("/admin/models", headers=ADMIN, json={"alias": "second", "engine": "llama_cpp", "model": "org/second"})
        assert created.status_code == 201, created.text
        registry = created.json()["registry"]
        assert registry["path"] == str(tmp_path / "models.yaml") and registry["created"] is True
        assert "reads while JARVIS_MODELS_FILE is unset" in registry["note"]
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    text = (tmp_path / "models.yaml").read_text()
    assert text.startswith("# Model registry written by the Jarvis admin API")
    # a restart with the same .env serves what the registry says
    shop = EngineShop()
    _app, client, lifespan = await start_app(tmp_path, shop, cache_dir=tmp_path, admin_key="boss", model_alias="jarvis")
    try:
        status = (await client.get("/admin/status", headers=ADMIN)).json()
        assert status["registry"]["source"].startswith("written by the admin API")
        assert [model["alias"] for model in status["models"]] == ["fake-model", "second"]
        assert status["models"][0]["aliases"] == ["jarvis"]
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


# ---- one line for a bad registry at start ----------------------------------------------------


def test_a_bad_registry_is_one_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - alias: a\n    engine: llama_cpp\n  - alias: big\n    engine: vllm\n    options: {gpu_memory_utilization: lots}\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, models_file=path)
    assert isinstance(raised.value, RegistryError)
    assert str(raised.value) == f"{path}: entry 2 ('big'): field options.gpu_memory_utilization: must be float, got 'lots'"


def test_main_stops_on_a_bad_registry_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - alias: a\n    engine: llama_cpp\n    context_size: tiny\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        cwd=tmp_path,
        env={"JARVIS_MODELS_FILE": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: entry 1 ('a'): field context_size:")


# ---- backends and fallback -------------------------------------------------------------------


async def test_backends_report_engines_options_and_choice(registry) -> None:
    client, _, _, _ = registry
    report = (await client.get("/admin/backends", headers=ADMIN)).json()
    engines = {engine["name"]: engine for engine in report["engines"]}
    assert set(engines) == {"llama_cpp", "vllm", "openai"}
    assert (engines["llama_cpp"]["local"], engines["openai"]["local"]) == (True, False)
    assert "upstreams" in [option["name"] for option in engines["openai"]["options"]]
    llama = engines["llama_cpp"]
    assert llama["available"] is True and llama["build"]["installed"] is True and llama["build"]["version"]
    assert "parallel" in [option["name"] for option in llama["options"]]
    gpu_memory = next(option for option in engines["vllm"]["options"] if option["name"] == "gpu_memory_utilization")
    assert gpu_memory == {**gpu_memory, "type": "float", "default": 0.9, "range": "above 0 and at most 1", "flag": "--gpu-memory-utilization"}
    assert isinstance(report["gpus"], list)
    assert report["choice"] == {"setting": "llama_cpp", "engine": "llama_cpp", "reason": "JARVIS_INFERENCE_ENGINE=llama_cpp", "fallback": None}


async def test_switch_to_auto_and_back(registry) -> None:
    client, shop, _, audit = registry
    switched = (await client.post("/admin/engine", headers=ADMIN, json={"engine": "vllm"})).json()
    assert (switched["from"], switched["to"], switched["engine"], switched["configured_engine"]) == ("llama_cpp", "vllm", "vllm", "llama_cpp")
    assert shop.made[-1][:2] == ("small", "vllm")
    auto = (await client.post("/admin/engine", headers=ADMIN, json={"engine": "auto"})).json()
    assert auto["to"] in ("llama_cpp", "vllm") and auto["reason"].startswith("auto:")
    assert (await client.get("/admin/status", headers=ADMIN)).json()["engine_choice"] == auto["reason"]
    assert_error(await client.post("/admin/engine", headers=ADMIN, json={"engine": "onnx"}), 400, param="engine")
    assert audit_lines(audit)[-1]["action"] == "switch engine of small"


async def test_fallback_serves_on_the_other_engine_and_says_so(tmp_path: Path) -> None:
    shop = EngineShop()
    shop.failing["vllm"] = "vLLM could not load fake-model: bad option"
    _app, client, lifespan = await start_app(tmp_path, shop, inference_engine="fallback", preferred_engine="vllm", admin_key="boss")
    try:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["engine"] == "llama_cpp"
        assert health["fallback"] == "vllm could not start it (vLLM could not load fake-model: bad option); running on llama_cpp instead"
        status = (await client.get("/admin/status", headers=ADMIN)).json()
        assert status["fallback"] == health["fallback"] and status["models"][0]["configured_engine"] == "vllm"
        assert (await client.post(CHAT, json={"messages": [{"role": "user", "content": "x"}]})).status_code == 200
        assert [engine for _, engine, _ in shop.made] == ["llama_cpp"]
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_fallback_failing_on_both_engines_gives_both_reasons(tmp_path: Path) -> None:
    shop = EngineShop()
    shop.failing.update({"vllm": "vLLM says no", "llama_cpp": "llama.cpp says no"})
    _app, client, lifespan = await start_app(tmp_path, shop, inference_engine="fallback", preferred_engine="vllm")
    try:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["reason"] == "on vllm: vLLM says no; on llama_cpp: llama.cpp says no"
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_without_fallback_a_failing_engine_is_not_replaced(tmp_path: Path) -> None:
    shop = EngineShop()
    shop.failing["vllm"] = "vLLM says no"
    _app, client, lifespan = await start_app(tmp_path, shop, inference_engine="vllm")
    try:
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["reason"] == "vLLM says no"
        assert shop.made == []
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)

