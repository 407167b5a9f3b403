"""Real tier: registry changes through the admin API on a live server with the packaged model
(a change reloads the model while a stream runs, and the stream completes; a restart reads the
same registry), and the engine fallback: vLLM that cannot start the model, llama.cpp serving it."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from service.model_registry import read_models_file
from tests.conftest import start_live_server, stop_live_server

pytestmark = pytest.mark.real

ADMIN_KEY = "registry-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REGISTRY = """\
# live registry test
models:
  - alias: main             # the one that streams
    engine: llama_cpp
    context_size: 1024
    options: {parallel: 2}
  - {alias: spare, engine: llama_cpp, context_size: 512}
"""


def admin(base_url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{base_url}/admin{path}", headers=ADMIN, timeout=300, **kwargs)


def test_change_reloads_while_a_stream_runs_and_a_restart_reads_the_registry(tmp_path: Path) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(REGISTRY)
    env = {"JARVIS_MODELS_FILE": str(models_file), "JARVIS_ADMIN_KEY": ADMIN_KEY, "JARVIS_AUDIT_LOG": str(tmp_path / "audit.log")}
    server = start_live_server(tmp_path, **env)
    try:
        client = openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=300)
        stream = client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            max_tokens=64, temperature=0, stream=True,
        )
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        changed: dict[str, httpx.Response] = {}
        changer = threading.Thread(target=lambda: changed.setdefault("r", admin(server.base_url, "PUT", "/models/main", json={"options": {"parallel": 3}})))
        changer.start()
        rest = list(stream)  # the stream goes on while the change waits for it
        finishes = [chunk.choices[0].finish_reason for chunk in rest if chunk.choices and chunk.choices[0].finish_reason]
        assert finishes in (["length"], ["stop"])
        changer.join(300)
        response = changed["r"]
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["outcome"], body["reloaded"], body["state"]) == ("reloaded", True, "loaded")
        assert body["engine_stats"]["parallel"] == 3
        assert read_models_file(models_file)[0].options == {"parallel": 3}
        assert "# the one that streams" in models_file.read_text()

        created = admin(server.base_url, "POST", "/models", json={"alias": "extra", "engine": "llama_cpp", "max_tokens": 8})
        assert created.status_code == 201, created.text
        deleted = admin(server.base_url, "DELETE", "/models/spare")
        assert deleted.status_code == 200 and deleted.json()["deleted"] == "spare"
        assert [entry.alias for entry in read_models_file(models_file)] == ["main", "extra"]
        answer = client.chat.completions.create(model="extra", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert answer.model == "extra"
    finally:
        stop_live_server(server)

    again = start_live_server(tmp_path, **env)
    try:
        listing = admin(again.base_url, "GET", "/models").json()
        assert [(model["alias"], model["entry"].get("options")) for model in listing["models"]] == [("main", {"parallel": 3}), ("extra", None)]
        assert listing["models"][0]["engine_stats"]["parallel"] == 3
    finally:
        stop_live_server(again)


@pytest.mark.vllm
def test_fallback_to_llama_cpp_when_vllm_cannot_start_the_model(tmp_path: Path) -> None:
    """vLLM is preferred but told the packaged model is AWQ-quantized, which it is not: vLLM
    refuses it, and llama.cpp serves it instead."""
    server = start_live_server(
        tmp_path,
        JARVIS_INFERENCE_ENGINE="fallback",
        JARVIS_PREFERRED_ENGINE="vllm",
        JARVIS_VLLM_QUANTIZATION="awq",
        JARVIS_CONTEXT_SIZE="1024",
        JARVIS_ADMIN_KEY=ADMIN_KEY,
        JARVIS_AUDIT_LOG=str(tmp_path / "audit.log"),
    )
    try:
        health = httpx.get(f"{server.base_url}/health").json()
        assert health["status"] == "ok" and health["engine"] == "llama_cpp"
        assert health["fallback"].startswith("vllm could not start it (vLLM could not load")
        assert "awq" in health["fallback"] and health["fallback"].endswith("running on llama_cpp instead")
        status = admin(server.base_url, "GET", "/status").json()
        assert status["engine_setting"] == "fallback" and status["fallback"] == health["fallback"]
        assert status["models"][0]["configured_engine"] == "vllm" and status["models"][0]["engine"] == "llama_cpp"
        client = openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=300)
        answer = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert "could not start on vllm" in server.log_path.read_text()
    finally:
        stop_live_server(server)
