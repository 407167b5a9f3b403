"""Remote models in the registry (engine kind openai): the entries and fallbacks accepted and the
errors naming the field; managed upstreams' command lines, built from the registry's engine options
and read back by the engine servers' own argument parsers (vLLM's tensor and pipeline parallelism
and its Ray backend, which cannot run here, are checked this way)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from backends.remote.config import LaunchSpec, upstream_configs
from backends.remote.launch import launch_command
from service.model_registry import RegistryError, parse_registry_text
from service.vllm_command import parse_vllm_command

LOCAL = "  - {alias: local, engine: llama_cpp}\n"


def registry(*entries: str) -> str:
    return "models:\n" + LOCAL + "".join(entries)


def test_a_remote_entry_with_one_or_several_upstreams() -> None:
    entries = parse_registry_text(
        registry(
            "  - {alias: gpu, engine: openai, model: Qwen/Qwen2.5-7B-Instruct, fallback: local,\n"
            "     options: {base_url: 'http://gpu-box:8000', api_key_env: GPU_KEY, timeout: 30}}\n",
            "  - alias: pair\n    engine: openai\n    options:\n      upstreams:\n"
            "        - {base_url: 'http://a:8000/v1', flavour: vllm}\n"
            "        - base_url: http://127.0.0.1:8101/v1\n"
            "          start: {engine: vllm, model: Qwen/Qwen2.5-7B-Instruct, options: {tensor_parallel_size: 2}}\n",
        ),
        "models.yaml",
    )
    gpu, pair = entries[1], entries[2]
    assert (gpu.fallback, gpu.options["timeout"]) == ("local", 30)
    [one] = upstream_configs(gpu.options)
    assert (one.base_url, one.root, one.api_key_env, one.name) == ("http://gpu-box:8000/v1", "http://gpu-box:8000", "GPU_KEY", "gpu-box:8000")
    first, second = upstream_configs(pair.options)
    assert (first.flavour, first.launch, second.flavour) == ("vllm", None, "auto")
    assert second.launch == LaunchSpec("vllm", "native", "Qwen/Qwen2.5-7B-Instruct", None, {"tensor_parallel_size": 2})


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("  - {alias: r, engine: openai, options: {flavour: ollama}}\n", "field options.flavour: must be one of 'auto'"),
        ("  - {alias: r, engine: openai, options: {timeout: soon}}\n", "field options.timeout: must be float"),
        ("  - {alias: r, engine: openai, options: {upstreams: []}}\n", "field options.upstreams: must be a non-empty list"),
        ("  - {alias: r, engine: openai, options: {upstreams: [{flavour: vllm}]}}\n", "options.upstreams: 0.base_url: every upstream needs"),
        ("  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'ftp://x'}]}}\n", "0.base_url: 'ftp://x' is not an http(s) URL"),
        ("  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'http://x:1', colour: red}]}}\n", "0.colour: unknown field"),
        (
            "  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'http://127.0.0.1:1', start: {engine: openai}}]}}\n",
            "0.start.engine: must be one of llama_cpp, vllm",
        ),
        (
            "  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'http://127.0.0.1:1', start: {engine: vllm, options: {tensor_parallel_size: two}}}]}}\n",
            "0.start.options.tensor_parallel_size: must be int, got 'two'",
        ),
        (
            "  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'http://gpu-box:1', start: {engine: vllm}}]}}\n",
            "can only start an upstream on this machine",
        ),
        (
            "  - {alias: r, engine: openai, options: {upstreams: [{base_url: 'http://a:1'}, {base_url: 'http://a:1/v1'}]}}\n",
            "http://a:1/v1 is listed twice",
        ),
        ("  - {alias: r, engine: openai, fallback: nowhere}\n", "field fallback: no entry is named 'nowhere'"),
        ("  - {alias: r, engine: openai, fallback: r}\n", "field fallback: a model cannot be its own fallback"),
        (
            "  - {alias: r, engine: openai, fallback: s}\n  - {alias: s, engine: openai, fallback: local}\n",
            "'s' falls back to 'local' itself",
        ),
    ],
)
def test_bad_remote_entries_name_the_field(entry: str, says: str) -> None:
    with pytest.raises(RegistryError) as raised:
        parse_registry_text(registry(entry), "models.yaml")
    assert says in str(raised.value)


# ---- managed upstreams: command lines ------------------------------------------------------------


def test_vllm_scale_out_options_become_vllm_serve_arguments_and_read_back_as_the_same_entry() -> None:
    options = {
        "tensor_parallel_size": 4, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray",
        "gpu_memory_utilization": 0.85, "enable_prefix_caching": False, "dtype": "bfloat16", "cpu_kvcache_space_gb": 4.0,
    }
    spec = LaunchSpec("vllm", "native", "", 16384, options)
    launch = launch_command(spec, "Qwen/Qwen2.5-72B-Instruct-AWQ", 8192, "127.0.0.1", 8101, api_key="sk-upstream")
    command = launch.command
    assert command[:3] == ["vllm", "serve", "Qwen/Qwen2.5-72B-Instruct-AWQ"]
    text = shlex.join(command)
    for words in ("--tensor-parallel-size 4", "--pipeline-parallel-size 2", "--distributed-executor-backend ray",
                  "--no-enable-prefix-caching", "--max-model-len 16384", "--enable-tokenizer-info-endpoint", "--port 8101"):
        assert words in text
    assert (launch.env, launch.flavour, launch.unmapped) == ({"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_API_KEY": "sk-upstream"}, "vllm", [])
    assert "sk-upstream" not in text  # the key goes in the environment, never on the command line
    parsed = parse_vllm_command(text)  # the reverse: this server's own `vllm serve` parser
    assert parsed.entry["options"] == {key: value for key, value in {**options, "max_model_len": 16384}.items() if key != "cpu_kvcache_space_gb"}


@pytest.mark.vllm
def test_vllm_serve_itself_accepts_the_managed_command() -> None:
    """vLLM's own argument parser and engine arguments read the command as meant."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    options = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray", "enforce_eager": True}
    launch = launch_command(LaunchSpec("vllm", "native", "", None, options), "Qwen/Qwen2.5-7B-Instruct", 8192, "0.0.0.0", 8000)
    arguments = make_arg_parser(FlexibleArgumentParser()).parse_args(launch.command[2:])
    arguments.model = arguments.model_tag  # as `vllm serve` does with its positional model
    engine = AsyncEngineArgs.from_cli_args(arguments)
    assert (engine.model, engine.tensor_parallel_size, engine.pipeline_parallel_size) == ("Qwen/Qwen2.5-7B-Instruct", 2, 2)
    assert (engine.distributed_executor_backend, engine.enforce_eager, engine.max_model_len) == ("ray", True, 8192)
    assert engine.structured_outputs_config.disable_any_whitespace is True
    assert arguments.enable_tokenizer_info_endpoint and arguments.enable_prompt_tokens_details
    assert (arguments.host, arguments.port, engine.served_model_name) == ("0.0.0.0", 8000, ["Qwen/Qwen2.5-7B-Instruct"])


def test_llama_cpp_python_server_reads_the_managed_command() -> None:
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    spec = LaunchSpec("llama_cpp", "native", "", 2048, {"n_threads": 2, "n_gpu_layers": -1, "parallel": 4})
    launch = launch_command(spec, "/models/q.gguf", 8192, "127.0.0.1", 8102)
    assert launch.command[1:3] == ["-m", "llama_cpp.server"] and launch.unmapped == ["parallel"]
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    arguments = parser.parse_args(launch.command[3:])
    server = parse_model_from_args(ServerSettings, arguments)
    model = parse_model_from_args(ModelSettings, arguments)
    assert (model.model, model.n_ctx, model.n_threads, model.n_gpu_layers) == ("/models/q.gguf", 2048, 2, -1)
    assert (server.host, server.port, server.interrupt_requests) == ("127.0.0.1", 8102, False)


def test_a_jarvis_upstream_gets_its_settings_and_none_of_this_servers() -> None:
    spec = LaunchSpec("llama_cpp", "jarvis", "", 1024, {"parallel": 2, "n_threads": 1}, env={"JARVIS_LOG_LEVEL": "DEBUG"})
    launch = launch_command(spec, "", 8192, "127.0.0.1", 8103, api_key="k")
    assert launch.command[-1] == str(Path(__file__).resolve().parent.parent / "main.py")
    assert launch.env == {
        "JARVIS_HOST": "127.0.0.1", "JARVIS_PORT": "8103", "JARVIS_INFERENCE_ENGINE": "llama_cpp", "JARVIS_MODEL_NAME": "",
        "JARVIS_CONTEXT_SIZE": "1024", "JARVIS_MODELS_FILE": "", "JARVIS_API_KEY": "k", "JARVIS_ADMIN_KEY": "",
        "JARVIS_PARALLEL": "2", "JARVIS_N_THREADS": "1", "JARVIS_LOG_LEVEL": "DEBUG",
    }
    assert launch.flavour == "jarvis"
