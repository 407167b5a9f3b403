"""Real tier: the admin API, the model registry, embeddings and metrics on a live server with
the packaged model (two registry entries), through the openai client and plain HTTP."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, API_KEY

pytestmark = pytest.mark.real

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def client(registry_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=registry_server.api_url, api_key=API_KEY, max_retries=0, timeout=300)


# The first switch to vLLM in a session may convert the GGUF and then start vLLM: minutes on 2 cores.
ENGINE_SWITCH_TIMEOUT = 900


def admin(server, method: str, path: str, timeout: float = 300, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.base_url}/admin{path}", headers=ADMIN, timeout=timeout, **kwargs)


def model_states(client: openai.OpenAI) -> dict[str, str]:
    return {model.id: model.model_extra["state"] for model in client.models.list()}


def audit_actions(server) -> list[str]:
    return [json.loads(line)["action"] for line in server.audit_log.read_text().splitlines()]


def test_wrong_inference_key_is_401(registry_server) -> None:
    wrong = openai.OpenAI(base_url=registry_server.api_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_admin_refuses_without_key_and_with_the_inference_key(registry_server) -> None:
    assert httpx.get(f"{registry_server.base_url}/admin/status").status_code == 401
    inference = httpx.get(f"{registry_server.base_url}/admin/status", headers={"Authorization": f"Bearer {API_KEY}"})
    assert inference.status_code == 401
    assert inference.json()["error"]["type"] == "authentication_error"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert raised.value.body["code"] == "model_not_found"


def test_on_demand_load_then_keep_alive_unload(registry_server, client: openai.OpenAI) -> None:
    assert model_states(client) == {"primary": "loaded", "secondary": "unloaded"}
    answer = client.chat.completions.create(model="secondary", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.model == "secondary" and answer.choices[0].message.content is not None
    # one model at a time: the primary made room
    assert model_states(client) == {"primary": "unloaded", "secondary": "loaded"}
    deadline = time.monotonic() + 30
    while model_states(client)["secondary"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model_states(client)["secondary"] == "unloaded", "keep-alive (2 s) did not unload the idle model"


def test_load_unload_reload_frees_memory(registry_server, client: openai.OpenAI) -> None:
    loaded = admin(registry_server, "POST", "/models/primary/load")
    assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
    client.chat.completions.create(model="primary", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    rss_loaded = admin(registry_server, "GET", "/status").json()["process_rss_bytes"]
    unloaded = admin(registry_server, "POST", "/models/primary/unload").json()
    assert unloaded["state"] == "unloaded"
    freed = rss_loaded - unloaded["process_rss_bytes"]
    assert freed > 100 * 1024 * 1024, f"unloading freed only {freed / 2**20:.0f} MiB of RSS"
    reloaded = admin(registry_server, "POST", "/models/primary/load").json()
    assert reloaded["state"] == "loaded"
    assert client.chat.completions.create(model="primary", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices
    actions = audit_actions(registry_server)
    assert [a for a in actions if a.endswith("primary")][-3:] == ["load primary", "unload primary", "load primary"]


def test_status_reports_engine_slots_and_memory(registry_server) -> None:
    status = admin(registry_server, "GET", "/status").json()
    assert status["engine"] == "llama_cpp" and status["ready"] is True
    primary = next(model for model in status["models"] if model["alias"] == "primary")
    assert primary["state"] == "loaded"
    assert status["process_rss_bytes"] > 0


def test_embeddings_shape_and_determinism(client: openai.OpenAI) -> None:
    texts = ["turn on the kitchen light", "what is the weather"]
    first = client.embeddings.create(model="primary", input=texts)
    second = client.embeddings.create(model="primary", input=texts)
    assert [item.index for item in first.data] == [0, 1]
    vectors = [item.embedding for item in first.data]
    assert len(vectors[0]) == len(vectors[1]) > 100
    assert math.isclose(math.fsum(v * v for v in vectors[0]), 1.0, rel_tol=1e-3)
    assert vectors == [item.embedding for item in second.data]
    assert vectors[0] != vectors[1]
    assert first.usage.prompt_tokens > 0


def test_metrics_count_a_request(registry_server, client: openai.OpenAI) -> None:
    def count() -> float:
        text = httpx.get(f"{registry_server.base_url}/metrics").text
        for line in text.splitlines():
            if line.startswith('jarvis_requests_total{route="/v1/chat/completions",status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    client.chat.completions.create(model="primary", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert count() == before + 1


@pytest.mark.vllm
def test_switch_engine_while_a_stream_runs(registry_server, client: openai.OpenAI) -> None:
    """The running stream completes on llama.cpp; the next request runs on vLLM. Last in the
    module: it switches back to llama.cpp at the end."""
    messages = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
    stream = client.chat.completions.create(model="primary", messages=messages, max_tokens=120, temperature=0, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    switched: dict[str, httpx.Response | Exception] = {}

    def switch_to_vllm() -> None:
        try:
            switched["r"] = admin(
                registry_server, "POST", "/engine", timeout=ENGINE_SWITCH_TIMEOUT, json={"engine": "vllm", "model": "primary"}
            )
        except Exception as error:  # reported by the assertion below, not lost in the thread
            switched["r"] = error

    switcher = threading.Thread(target=switch_to_vllm)
    switcher.start()
    rest = list(stream)  # the stream keeps going on the old engine while vLLM loads
    assert [chunk.choices[0].finish_reason for chunk in rest if chunk.choices and chunk.choices[0].finish_reason] in (["length"], ["stop"])
    switcher.join(ENGINE_SWITCH_TIMEOUT + 10)
    response = switched.get("r")
    assert isinstance(response, httpx.Response), f"the engine switch did not answer: {response!r}"
    assert response.status_code == 200, response.text
    assert response.json()["from"] == "llama_cpp" and response.json()["to"] == "vllm"
    answer = client.chat.completions.create(model="primary", messages=messages, max_tokens=4, temperature=0)
    assert answer.choices[0].finish_reason in {"stop", "length"}
    engines = {model.id: model.model_extra["engine"] for model in client.models.list()}
    assert engines["primary"] == "vllm"
    assert "switch engine of primary" in audit_actions(registry_server)
    back = admin(registry_server, "POST", "/engine", timeout=ENGINE_SWITCH_TIMEOUT, json={"engine": "llama_cpp", "model": "primary"})
    assert back.status_code == 200 and back.json()["to"] == "llama_cpp"
