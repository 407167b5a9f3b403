"""Real tier: the `jarvis` command through its installed entry point (.venv/bin/jarvis) in a
subprocess, against a live server on the packaged model and with no server running. URL and
keys come from a .env in the working folder, as an operator's would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from service.model_files import packaged_model_path
from service.model_registry import read_models_file
from service.settings import Settings
from tests.conftest import ROOT, LiveServer, free_port, start_live_server, stop_live_server

pytestmark = pytest.mark.real

JARVIS = Path(sys.prefix) / "bin" / "jarvis"
ADMIN_KEY = "cli-admin-key"
API_KEY = "cli-inference-key"
REGISTRY = """\
# The CLI test registry
models:
  - alias: primary          # served first
    engine: llama_cpp
    context_size: 1024
    options: {parallel: 2}
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def jarvis(folder: Path, *args: str, timeout: float = 300) -> Result:
    """Run the installed `jarvis` in `folder` (whose .env it reads), importing this checkout."""
    assert JARVIS.is_file(), f"{JARVIS} is missing: ./run.sh installs it (pip install -e . --no-deps)"
    env = {key: value for key, value in os.environ.items() if not key.startswith("JARVIS_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200")
    done = subprocess.run([str(JARVIS), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def one_error_line(result: Result, code: int, says: str) -> None:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]


def write_env(folder: Path, port: int, models_file: Path) -> None:
    (folder / ".env").write_text(
        f"JARVIS_PORT={port}\nJARVIS_ADMIN_KEY={ADMIN_KEY}\nJARVIS_API_KEY={API_KEY}\n"
        f"JARVIS_MODELS_FILE={models_file}\nJARVIS_AUDIT_LOG={folder / 'audit.log'}\n"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    folder = tmp_path_factory.mktemp("cli-served")
    models_file = folder / "models.yaml"
    models_file.write_text(REGISTRY)
    server = start_live_server(
        folder, JARVIS_MODELS_FILE=str(models_file), JARVIS_ADMIN_KEY=ADMIN_KEY, JARVIS_API_KEY=API_KEY,
        JARVIS_AUDIT_LOG=str(folder / "audit.log"),
    )
    write_env(folder, int(server.base_url.rsplit(":", 1)[1]), models_file)
    yield server, folder
    stop_live_server(server)


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    """A folder whose .env points at a port nothing listens on."""
    models_file = tmp_path / "models.yaml"
    models_file.write_text(REGISTRY)
    write_env(tmp_path, free_port(), models_file)
    return tmp_path


def hf_folder(parent: Path, quantization: dict) -> Path:
    folder = parent / "Qwen2.5-7B-Instruct-AWQ"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "torch_dtype": "float16",
        "max_position_embeddings": 32768, "quantization_config": quantization,
    }))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
    return folder


# ---- with a server --------------------------------------------------------------------------


def test_help_on_every_command(served) -> None:
    _, folder = served
    for command in ([], ["status"], ["models"], ["load"], ["unload"], ["switch"], ["backend"], ["backend", "status"],
                    ["backend", "switch"], ["backend", "auto"], ["backend", "options"], ["add-model"], ["doctor"], ["parse-command"]):
        result = jarvis(folder, *command, "--help")
        assert result.code == 0 and "Usage: jarvis" in result.stdout, (command, result.stderr)


def test_status(served) -> None:
    server, folder = served
    status = jarvis(folder, "status", "--json")
    assert status.code == 0, status.stderr
    data = status.json()
    assert data["running"] is True and data["url"] == server.base_url
    assert data["health"]["status"] == "ok" and data["engine"] == "llama_cpp" and data["stage"] == "ready"
    primary = next(model for model in data["models"] if model["alias"] == "primary")
    assert primary["engine_stats"]["parallel"] == 2 and primary["context_length"] == 1024
    assert data["process_rss_bytes"] > 0 and data["uptime_seconds"] >= 0
    text = jarvis(folder, "status")
    assert text.code == 0 and "Models" in text.stdout and "primary" in text.stdout and "llama_cpp" in text.stdout


def test_add_model_from_the_packaged_gguf_then_chat_with_it(served) -> None:
    server, folder = served
    gguf = packaged_model_path(Settings().cache_dir)
    added = jarvis(folder, "add-model", str(gguf), "--alias", "packaged", "--context-size", "1024", "--json")
    assert added.code == 0, added.stderr
    result = added.json()
    assert result["detected"] == {
        "format": "gguf", "architecture": "gemma3", "name": "Gemma 3 270m", "quantization": "Q4_K_M",
        "context_length": 32768, "embedded_chat_template": False, "chat_format": "gemma (the format of architecture gemma3)",
    }
    assert result["entry"]["engine"] == "llama_cpp" and result["entry"]["context_size"] == 1024
    assert result["written"] is True and result["through"] == server.base_url
    entry = {e.alias: e for e in read_models_file(folder / "models.yaml")}["packaged"]
    assert entry.model == str(gguf) and entry.source.quantization == "Q4_K_M"
    assert "# served first" in (folder / "models.yaml").read_text()
    client = openai.OpenAI(base_url=server.api_url, api_key=API_KEY, max_retries=0, timeout=300)
    answer = client.chat.completions.create(model="packaged", messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    assert answer.model == "packaged" and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens >= 1


def test_add_model_from_an_hf_folder(served, tmp_path: Path) -> None:
    _, folder = served
    model = hf_folder(tmp_path, {"quant_method": "awq", "bits": 4, "group_size": 128})
    added = jarvis(folder, "add-model", str(model), "--json")
    assert added.code == 0, added.stderr
    result = added.json()
    assert result["detected"]["quantization"] == "awq" and result["detected"]["dtype"] == "float16"
    assert result["detected"]["architecture"] == "qwen2" and result["detected"]["embedded_chat_template"] is True
    assert result["entry"] == {
        "alias": "qwen2.5-7b-instruct-awq", "engine": "vllm", "model": str(model), "options": {"quantization": "awq"},
        "context_size": 8192,
        "source": {"architecture": "qwen2", "quantization": "awq", "dtype": "float16", "context_length": 32768,
                   "embedded_chat_template": True, "kind": "hf-folder"},
    }
    assert any("32768 tokens of context" in note for note in result["notes"])
    listed = jarvis(folder, "models", "--json").json()
    state = {model["alias"]: model["state"] for model in listed["models"]}
    assert state["qwen2.5-7b-instruct-awq"] == "unloaded"


def test_add_model_dry_runs_bitsandbytes_an_hf_id_and_a_command(served, tmp_path: Path) -> None:
    _, folder = served
    before = (folder / "models.yaml").read_text()
    bnb = jarvis(folder, "add-model", str(hf_folder(tmp_path, {"load_in_4bit": True})), "--dry-run", "--json").json()
    assert bnb["entry"]["options"] == {"quantization": "bitsandbytes"} and bnb["written"] is False
    remote = jarvis(folder, "add-model", "example-org/never-downloaded-7b", "--dry-run", "--json").json()
    assert remote["entry"]["source"] == {"kind": "hf-id", "local": False} and remote["entry"]["engine"] == "vllm"
    assert "will fetch it from the model hub on its first load" in remote["notes"][0]
    command = jarvis(folder, "add-model", "vllm serve example-org/m --max-model-len 4k -tp 2 --swap-space 4", "--dry-run", "--json").json()
    assert command["entry"]["options"] == {"max_model_len": 4000, "tensor_parallel_size": 2}
    assert command["detected"]["unmapped_flags"] == ["--swap-space 4"]
    assert (folder / "models.yaml").read_text() == before


def test_load_unload_and_models(served) -> None:
    _, folder = served
    loaded = jarvis(folder, "load", "primary", "--json")
    assert loaded.code == 0 and loaded.json()["state"] == "loaded", loaded.stderr
    unloaded = jarvis(folder, "unload", "primary", "--json")
    assert unloaded.code == 0 and unloaded.json()["state"] == "unloaded"
    models = jarvis(folder, "models", "--json").json()
    assert models["server"] and models["registry"]["path"] == str(folder / "models.yaml")
    assert {model["alias"]: model["state"] for model in models["models"]}["primary"] == "unloaded"
    assert jarvis(folder, "load", "primary").stdout.startswith("primary loaded on llama_cpp")


def test_switch_and_backend(served) -> None:
    _, folder = served
    switched = jarvis(folder, "switch", "llama_cpp", "--model", "primary", "--json")
    assert switched.code == 0, switched.stderr
    assert switched.json()["to"] == "llama_cpp" and switched.json()["state"] == "loaded"
    status = jarvis(folder, "backend", "status", "--json").json()
    engines = {engine["name"]: engine for engine in status["engines"]}
    assert engines["llama_cpp"]["available"] is True and engines["llama_cpp"]["build"]["version"]
    assert status["choice"]["setting"] == "llama_cpp"
    auto = jarvis(folder, "backend", "auto", "--json")
    assert auto.code == 0, auto.stderr
    assert auto.json()["reason"].startswith("auto:")
    assert jarvis(folder, "backend", "switch", "llama_cpp").code == 0
    options = jarvis(folder, "backend", "options", "vllm", "--json").json()
    gpu = next(option for option in options["vllm"] if option["name"] == "gpu_memory_utilization")
    assert gpu["setting"] == "JARVIS_VLLM_GPU_MEMORY_UTILIZATION" and gpu["default"] == 0.9


def test_doctor_with_the_server_running(served) -> None:
    _, folder = served
    result = jarvis(folder, "doctor", "--json")
    assert result.code == 0, result.stdout
    checks = {check["name"]: check for check in result.json()["checks"]}
    assert checks["llama.cpp decode"]["status"] == "pass" and "decoded:" in checks["llama.cpp decode"]["detail"]
    assert checks["port"]["status"] == "pass" and "running Jarvis server" in checks["port"]["detail"]
    assert checks["admin key"]["status"] == "pass" and checks["model primary"]["status"] == "pass"


def test_bad_input_is_one_line_and_a_non_zero_exit(served, tmp_path: Path) -> None:
    _, folder = served
    one_error_line(jarvis(folder, "load", "ghost"), 2, "'ghost' does not exist")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just text\n")
    one_error_line(jarvis(folder, "add-model", str(not_gguf)), 2, "is not a GGUF file")
    one_error_line(jarvis(folder, "add-model", "not a model"), 2, "is neither a GGUF file")
    one_error_line(jarvis(folder, "add-model", "vllm serve --dtype half"), 2, "no model")
    one_error_line(jarvis(folder, "parse-command", "vllm serve 'unterminated"), 2, "unterminated ' quote")
    one_error_line(jarvis(folder, "switch", "onnx"), 2, "'onnx' is not one of 'llama_cpp', 'vllm'")
    one_error_line(jarvis(folder, "--admin-key", "wrong", "status"), 4, "Invalid or missing admin key")
    one_error_line(jarvis(folder, "add-model", str(packaged_model_path(Settings().cache_dir)), "--alias", "primary"), 2, "'primary' is already an entry")


# ---- without a server -----------------------------------------------------------------------


def test_status_and_load_without_a_server(offline: Path) -> None:
    one_error_line(jarvis(offline, "status"), 3, "no Jarvis server answers at http://127.0.0.1:")
    as_json = jarvis(offline, "status", "--json")
    assert as_json.code == 3 and as_json.json()["running"] is False
    one_error_line(jarvis(offline, "load", "primary"), 3, "no Jarvis server answers")


def test_models_add_model_and_parse_command_from_the_files(offline: Path, tmp_path: Path) -> None:
    models = jarvis(offline, "models", "--json")
    assert models.code == 0 and models.json()["server"] is None
    assert [model["alias"] for model in models.json()["models"]] == ["primary"]
    gguf = packaged_model_path(Settings().cache_dir)
    added = jarvis(offline, "add-model", str(gguf), "--alias", "local-gemma")
    assert added.code == 0, added.stderr
    assert "no server running: wrote local-gemma to" in added.stdout
    entries = read_models_file(offline / "models.yaml")
    assert [entry.alias for entry in entries] == ["primary", "local-gemma"]
    assert "# served first" in (offline / "models.yaml").read_text()
    parsed = jarvis(offline, "parse-command", "vllm serve org/m --gpu-memory-utilization 0.8", "--json").json()
    assert parsed["entry"]["options"] == {"gpu_memory_utilization": 0.8}
    assert "JARVIS_VLLM_GPU_MEMORY_UTILIZATION=0.8" in parsed["env"]
    backends = jarvis(offline, "backend", "status", "--json").json()
    assert backends["server"] is None and backends["choice"]["engine"] == "llama_cpp"


def test_doctor_without_a_server(offline: Path) -> None:
    good = jarvis(offline, "doctor", "--json")
    assert good.code == 0, good.stdout
    checks = {check["name"]: check for check in good.json()["checks"]}
    assert checks["port"]["status"] == "pass" and checks["port"]["detail"].endswith("is free")
    with (offline / "models.yaml").open("a") as registry:
        registry.write("  - {alias: broken, engine: llama_cpp, model: /nowhere/model.gguf}\n")
    bad = jarvis(offline, "doctor", "--no-decode", "--json")
    assert bad.code == 1
    broken = next(check for check in bad.json()["checks"] if check["name"] == "model broken")
    assert broken["status"] == "fail" and "/nowhere/model.gguf" in broken["detail"] and broken["fix"]
    assert bad.stderr.strip() == "error: doctor: model broken failed"
