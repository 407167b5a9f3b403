"""The environment set before vLLM is imported (fast tier)."""

from __future__ import annotations

import os

import pytest

from backends import vllm_environment
from backends.vllm_environment import prepare_vllm_environment

AOT = "VLLM_USE_AOT_COMPILE"


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(vllm_environment, "nvidia_gpu_present", lambda: False)
    monkeypatch.delenv(AOT, raising=False)  # restored (removed again) after the test
    return monkeypatch


def test_cpu_uses_the_compile_cache_that_loads_back(on_cpu: pytest.MonkeyPatch) -> None:
    prepare_vllm_environment()
    assert os.environ[AOT] == "0"


def test_a_value_the_user_set_is_kept(on_cpu: pytest.MonkeyPatch) -> None:
    on_cpu.setenv(AOT, "1")
    prepare_vllm_environment()
    assert os.environ[AOT] == "1"


def test_a_gpu_keeps_vllms_defaults(on_cpu: pytest.MonkeyPatch) -> None:
    on_cpu.setattr(vllm_environment, "nvidia_gpu_present", lambda: True)
    prepare_vllm_environment()
    assert AOT not in os.environ
