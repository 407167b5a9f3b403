"""The vLLM engine's mapping of our settings and sampling onto vLLM, and its start-up errors,
without vLLM itself (fast tier). The engine end to end is in test_live_vllm.py."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from backends import vllm_engine
from backends.base import ConstraintError, ConstraintSpec, EngineConfig, EngineError, GenerationRequest, SamplingParams
from backends.vllm_engine import VllmEngine


def engine(**options: object) -> VllmEngine:
    instance = VllmEngine(EngineConfig(model="org/model", context_size=2048, cache_dir="/tmp", options=options))
    instance._vllm = {
        "AsyncEngineArgs": lambda **kwargs: kwargs,
        "SamplingParams": lambda **kwargs: kwargs,
        "StructuredOutputsParams": lambda **kwargs: kwargs,
        "StructuredOutputsConfig": lambda **kwargs: kwargs,
        "DELTA": "delta",
    }
    instance._stop_token_ids = [1, 106]
    return instance


def test_a_missing_vllm_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)  # the engine sets it; removed again after
    with pytest.raises(EngineError) as raised:
        VllmEngine(EngineConfig(model="m", context_size=512, cache_dir="/tmp"))._import_vllm()
    message = str(raised.value)
    assert "vLLM cannot be imported" in message
    assert "JARVIS_INFERENCE_ENGINE=vllm" in message and "./run.sh" in message


def test_engine_options_map_onto_vllm_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_engine, "nvidia_gpu_present", lambda: False)
    arguments = engine(
        max_model_len=4096, tensor_parallel_size=2, dtype="bfloat16", enforce_eager=True, enable_prefix_caching=False,
        cpu_kvcache_space_gb=2.5, max_queue=16,
    )._engine_args("/models/x")
    assert arguments["model"] == arguments["tokenizer"] == "/models/x"
    assert arguments["max_model_len"] == 4096
    assert arguments["tensor_parallel_size"] == 2 and arguments["dtype"] == "bfloat16"
    assert arguments["enforce_eager"] is True and arguments["enable_prefix_caching"] is False
    assert arguments["kv_cache_memory_bytes"] == int(2.5 * 2**30)
    assert "max_queue" not in arguments  # a llama.cpp option, not vLLM's
    # Compact JSON is an engine setting in vLLM: a request's disable_any_whitespace is not read.
    assert arguments["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}


def test_on_a_gpu_the_kv_cache_follows_gpu_memory_utilization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_engine, "nvidia_gpu_present", lambda: True)
    arguments = engine(gpu_memory_utilization=0.8)._engine_args("m")
    assert arguments["gpu_memory_utilization"] == 0.8
    assert "kv_cache_memory_bytes" not in arguments
    assert arguments["max_model_len"] == 2048  # the context size when max_model_len is not set


def test_sampling_maps_one_for_one() -> None:
    sampling = SamplingParams(
        max_tokens=7, temperature=0, top_p=0.9, top_k=40, min_p=0.05, seed=3, presence_penalty=0.5,
        frequency_penalty=0.25, repeat_penalty=1.1, constraint=ConstraintSpec("json_schema", {"type": "object"}),
    )
    mapped = engine()._sampling(sampling)
    assert mapped["max_tokens"] == 7 and mapped["temperature"] == 0 and mapped["n"] == 1
    assert (mapped["top_p"], mapped["top_k"], mapped["min_p"], mapped["seed"]) == (0.9, 40, 0.05, 3)
    assert (mapped["presence_penalty"], mapped["frequency_penalty"], mapped["repetition_penalty"]) == (0.5, 0.25, 1.1)
    assert mapped["stop_token_ids"] == [1, 106]
    assert mapped["output_kind"] == "delta"
    assert mapped["structured_outputs"]["json"] == {"type": "object"}
    grammar = SamplingParams(max_tokens=1, constraint=ConstraintSpec("grammar", grammar='root ::= "yes"'))
    assert engine()._sampling(grammar)["structured_outputs"]["grammar"] == 'root ::= "yes"'


def test_overrides_win_over_the_cpu_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_engine, "nvidia_gpu_present", lambda: False)
    arguments = engine()._engine_args("m", runner="pooling", kv_cache_memory_bytes=123)
    assert arguments["runner"] == "pooling" and arguments["kv_cache_memory_bytes"] == 123


def test_the_packaged_gguf_asks_for_bos() -> None:
    from backends.gguf_to_hf import gguf_adds_bos
    from service.model_files import packaged_model_path
    from service.settings import Settings

    assert gguf_adds_bos(packaged_model_path(Settings().cache_dir)) is True


class _EndingLLM:
    """Stands in for vLLM's AsyncLLM: one output that ends the request with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def generate(self, *args: object, **kwargs: object) -> AsyncIterator[SimpleNamespace]:
        async def outputs() -> AsyncIterator[SimpleNamespace]:
            completion = SimpleNamespace(text="", token_ids=[0], finish_reason=self.reason)
            yield SimpleNamespace(outputs=[completion], finished=True, num_cached_tokens=0)

        return outputs()


async def _run_until_end(reason: str, constraint: object | None) -> list[str | None]:
    instance = engine()
    instance._vllm["TokensPrompt"] = lambda **kwargs: kwargs
    instance._llm = _EndingLLM(reason)
    request = GenerationRequest("r", [2, 9], SamplingParams(max_tokens=8, constraint=constraint))
    return [delta.finish_reason async for delta in instance.generate(request)]


@pytest.mark.parametrize(("reason", "reported"), [("stop", "stop"), ("length", "length"), ("repetition", "stop")])
async def test_vllms_finish_reasons_that_end_an_answer_are_reported(reason: str, reported: str) -> None:
    assert await _run_until_end(reason, None) == [reported]


async def test_a_grammar_that_allows_no_token_is_the_constraints_fault() -> None:
    """vLLM ends a request with "error" when its grammar matcher rejects the sampled token (every
    token was masked): the request's constraint admits no output, never a finished answer."""
    with pytest.raises(ConstraintError, match="no output matches it"):
        await _run_until_end("error", ConstraintSpec("json_schema", {"$ref": "#"}))


@pytest.mark.parametrize("reason", ["error", "abort"])
async def test_a_request_vllm_gave_up_on_is_an_engine_error(reason: str) -> None:
    with pytest.raises(EngineError, match=f"'{reason}'") as raised:
        await _run_until_end(reason, None)
    assert not isinstance(raised.value, ConstraintError)
