"""Inference engines, one module each, declared once as engine kinds (`backends.kinds`).
Importing this package is cheap: an engine module is imported only when that engine is chosen."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from backends.base import Engine, EngineConfig, EngineError
from backends.kinds import ENGINE_KINDS, engine_kind, engine_names
from backends.probe import gpu_report


def create_engine(name: str, config: EngineConfig) -> Engine:
    return engine_kind(name).load_class()(config)


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
    """What JARVIS_INFERENCE_ENGINE=`setting` means here, and why. `auto` resolves to an engine
    kind; `fallback` stays a policy (the preferred engine, then the others, tried at load)."""
    if setting == "fallback":
        return setting, "fallback: the preferred engine, and another one when the model cannot start on it"
    if setting != "auto":
        return setting, f"JARVIS_INFERENCE_ENGINE={setting}"
    installed = vllm_installed()
    if installed and nvidia_gpu_present():
        return "vllm", "auto: vLLM is installed and an NVIDIA GPU is present"
    why = "no NVIDIA GPU is present" if installed else "vLLM is not installed"
    return "llama_cpp", f"auto: {why}, so llama.cpp"


def machine_report(cache_dir: Path) -> dict[str, object]:
    """Every engine kind (can it run here, why not, its build and options) and the GPUs."""
    engines = [{**kind.describe(), "build": kind.build(cache_dir)} for kind in ENGINE_KINDS.values()]
    return {"engines": engines, "gpus": gpu_report()}


def preferred_engine(setting: str | None) -> tuple[str, str]:
    """The engine JARVIS_INFERENCE_ENGINE=fallback tries first, and why."""
    if setting:
        return setting, f"JARVIS_PREFERRED_ENGINE={setting}"
    if nvidia_gpu_present():
        return "vllm", "vLLM, as an NVIDIA GPU is present"
    return "llama_cpp", "llama.cpp, as no NVIDIA GPU is present"


__all__ = [
    "ENGINE_KINDS",
    "Engine",
    "EngineConfig",
    "EngineError",
    "choose_engine",
    "create_engine",
    "engine_kind",
    "engine_names",
    "machine_report",
    "nvidia_gpu_present",
    "preferred_engine",
    "vllm_installed",
]
