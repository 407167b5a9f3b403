"""Real tier: upstreams this server starts itself (`start:` in models.yaml). This server's own
process on the packaged model is started on the first request and stopped after the model's
keep-alive; another one is restarted after it is killed; llama-cpp-python's server (started from
the llama.cpp options) is stopped when the model is unloaded. Their output is in this log."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, LiveServer, free_port, start_live_server, stop_live_server
from tests.upstream_servers import alive, packaged_model, wait_gone

pytestmark = pytest.mark.real

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ASK = [{"role": "user", "content": "Say hello."}]
JARVIS_START = "{engine: llama_cpp, via: jarvis, context_size: 1024, options: {parallel: 1, n_threads: 1}}"


@dataclass
class Rig:
    proxy: LiveServer
    ports: dict[str, int]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp("managed")
    ports = {alias: free_port() for alias in ("ondemand", "resilient", "lcp")}
    lcp_start = f"{{engine: llama_cpp, model: '{packaged_model()}', context_size: 1024, options: {{n_threads: 1}}}}"
    models = folder / "models.yaml"
    models.write_text(
        "models:\n"
        "  - {alias: local, engine: llama_cpp, context_size: 1024, options: {parallel: 1, n_threads: 1}}\n"
        f"  - {{alias: ondemand, engine: openai, keep_alive_seconds: 3, options: {{health_interval: 0.5,\n"
        f"     upstreams: [{{base_url: 'http://127.0.0.1:{ports['ondemand']}/v1', start: {JARVIS_START}}}]}}}}\n"
        f"  - {{alias: resilient, engine: openai, options: {{health_interval: 0.5,\n"
        f"     upstreams: [{{base_url: 'http://127.0.0.1:{ports['resilient']}/v1', start: {JARVIS_START}}}]}}}}\n"
        f"  - {{alias: lcp, engine: openai, chat_format: gemma, context_size: 1024, options: {{health_interval: 0.5,\n"
        f"     upstreams: [{{base_url: 'http://127.0.0.1:{ports['lcp']}/v1', start: {lcp_start}}}]}}}}\n"
    )
    proxy = start_live_server(folder, JARVIS_MODELS_FILE=str(models), JARVIS_ADMIN_KEY=ADMIN_KEY)
    yield Rig(proxy, ports)
    stop_live_server(proxy)


@pytest.fixture(scope="module")
def client(rig: Rig) -> openai.OpenAI:
    return openai.OpenAI(base_url=rig.proxy.api_url, api_key="anything", max_retries=0, timeout=300)


def model_status(rig: Rig, alias: str) -> dict:
    status = httpx.get(f"{rig.proxy.base_url}/admin/status", headers=ADMIN, timeout=30).json()
    return next(model for model in status["models"] if model["alias"] == alias)


def managed(rig: Rig, alias: str) -> dict:
    return model_status(rig, alias)["engine_stats"]["upstreams"][0]["managed"]


def answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.TransportError:
        return False
    return True


def wait_until(condition, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_started_on_the_first_request_and_stopped_after_the_keep_alive(rig: Rig, client: openai.OpenAI) -> None:
    port = rig.ports["ondemand"]
    assert not answers(port) and model_status(rig, "ondemand")["state"] == "unloaded"
    answer = client.chat.completions.create(model="ondemand", messages=ASK, max_tokens=4, temperature=0)
    assert answer.model == "ondemand" and answer.choices[0].message.content
    first = managed(rig, "ondemand")
    assert first["state"] == "running" and alive(first["pid"]) and answers(port)
    wait_until(lambda: model_status(rig, "ondemand")["state"] == "unloaded", timeout=60)
    wait_gone(first["pid"])
    assert not answers(port)
    again = client.chat.completions.create(model="ondemand", messages=ASK, max_tokens=4, temperature=0)
    assert again.model == "ondemand"
    assert managed(rig, "ondemand")["pid"] not in (None, first["pid"])
    log = rig.proxy.log_path.read_text()
    assert f"starting managed upstream 127.0.0.1:{port}" in log and f"stopping managed upstream 127.0.0.1:{port}" in log
    assert f"[127.0.0.1:{port}]" in log and "ready on llama_cpp" in log  # the upstream's own output


def test_restarted_after_it_is_killed(rig: Rig, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="resilient", messages=ASK, max_tokens=2)
    before = managed(rig, "resilient")
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: managed(rig, "resilient")["restarts"] == 1 and managed(rig, "resilient")["state"] == "running")
    after = managed(rig, "resilient")
    assert after["pid"] != before["pid"] and after["last_exit"] == "died of SIGKILL"
    wait_until(lambda: model_status(rig, "resilient")["engine_stats"]["upstreams"][0]["healthy"])
    assert client.chat.completions.create(model="resilient", messages=ASK, max_tokens=2).model == "resilient"
    metrics = httpx.get(f"{rig.proxy.base_url}/metrics", timeout=30).text
    assert f'jarvis_upstream_restarts_total{{model="resilient",upstream="127.0.0.1:{rig.ports["resilient"]}"}} 1.0' in metrics


def test_llama_cpp_python_started_from_the_llama_cpp_options_and_stopped_on_unload(rig: Rig, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="lcp", messages=ASK, max_tokens=4, temperature=0)
    assert answer.model == "lcp" and answer.choices[0].message.content
    server = managed(rig, "lcp")
    assert "-m llama_cpp.server" in server["command"] and "--n_threads 1 --n_ctx 1024" in server["command"]
    assert "--interrupt_requests false" in server["command"]
    unloaded = httpx.post(f"{rig.proxy.base_url}/admin/models/lcp/unload", headers=ADMIN, timeout=120).json()
    assert unloaded["state"] == "unloaded"
    wait_gone(server["pid"])
