"""The stand-in run.sh starts while it installs vLLM: /health 503 with the stage, other routes a
503 OpenAI error body."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from server.process_tree import dies_with_this_process
from tests.conftest import ROOT, free_port


@pytest.fixture()
def stand_in() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "server/install_health.py", "127.0.0.1", str(port), "installing vLLM (cpu build)"],
        cwd=ROOT, preexec_fn=dies_with_this_process(),
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base_url + "/health", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.05)
    yield base_url
    process.terminate()
    process.wait(10)


def test_health_reports_the_install_stage(stand_in: str) -> None:
    response = httpx.get(stand_in + "/health")
    assert response.status_code == 503
    assert response.json()["stage"] == "installing vLLM (cpu build)"


def test_other_routes_get_an_openai_error(stand_in: str) -> None:
    response = httpx.post(stand_in + "/v1/chat/completions", json={"messages": []})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert "installing vLLM" in response.json()["error"]["message"]
