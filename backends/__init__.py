"""Inference engines, one module each, looked up by name. Importing this package is cheap:
an engine module is imported only when that engine is chosen."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess

from backends.base import Engine, EngineConfig, EngineError

# name -> "module:Class". Lazy so that a llama.cpp user never imports vLLM, and vice versa.
ENGINES: dict[str, str] = {
    "llama_cpp": "backends.llama_cpp_engine:LlamaCppEngine",
    "vllm": "backends.vllm_engine:VllmEngine",
}


# Per-engine options a models.yaml entry may set, with their types.
ENGINE_OPTIONS: dict[str, dict[str, type]] = {
    "llama_cpp": {"n_gpu_layers": int, "n_threads": int, "parallel": int, "max_queue": int},
    "vllm": {
        "tensor_parallel_size": int,
        "pipeline_parallel_size": int,
        "gpu_memory_utilization": float,
        "max_model_len": int,
        "dtype": str,
        "quantization": str,
        "enforce_eager": bool,
        "enable_prefix_caching": bool,
        "max_num_seqs": int,
        "distributed_executor_backend": str,
        "cpu_kvcache_space_gb": float,
    },
}


def create_engine(name: str, config: EngineConfig) -> Engine:
    try:
        target = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown inference engine {name!r}; choose one of {sorted(ENGINES)}") from None
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(config)


def nvidia_gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(setting: str) -> tuple[str, str]:
    """The engine to use for JARVIS_INFERENCE_ENGINE=`setting`, and why."""
    if setting != "auto":
        return setting, f"JARVIS_INFERENCE_ENGINE={setting}"
    installed = vllm_installed()
    if installed and nvidia_gpu_present():
        return "vllm", "auto: vLLM is installed and an NVIDIA GPU is present"
    why = "no NVIDIA GPU is present" if installed else "vLLM is not installed"
    return "llama_cpp", f"auto: {why}, so llama.cpp"
