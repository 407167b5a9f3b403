"""Decode speed of the llama.cpp build run.sh installs (explicit CPU features, no -march=native)
against llama-cpp-python's default native build, on the packaged model, in one run.

    python -m bench.bench_llama_build [--baseline-wheel PATH] [--rounds 5] [--tokens 96]

The baseline wheel is built once with llama-cpp-python's default flags (-march=native; about 8
minutes) into the cache, unless given. Each build runs in its own child process, turn about, so
both see the same machine load. Decoding runs on one thread and is measured in tokens per second
of wall time and per second of the process's CPU time; the CPU-time rate is what the build
decides, and it holds steady when other work shares the machine. Run it on a machine without
AMX: there the native build works, and the question is only whether the explicit flags lose speed."""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from backends.llama_cpp_build import PACKAGE, STATE_PATH, pinned_version
from bench.harness import setup_logging
from service.model_files import packaged_model_path
from service.settings import load_settings

logger = logging.getLogger("bench")

DECODE = """
import json, sys, time, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False)
prompt = "Write a short story about a lighthouse keeper who finds a message in a bottle."
llm.create_completion(prompt, max_tokens=4, temperature=0)  # warm up
tokens = int(sys.argv[2])
first = first_cpu = None
count = 0
for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
    count += 1
    if first is None:
        first, first_cpu = time.perf_counter(), time.process_time()
elapsed, cpu = time.perf_counter() - first, time.process_time() - first_cpu
print(json.dumps({"tokens": count, "rate": (count - 1) / elapsed, "cpu_rate": (count - 1) / cpu,
                  "info": llama_cpp.llama_print_system_info().decode().strip()}))
"""


def baseline_wheel(cache: Path) -> Path:
    folder = cache / "wheels" / PACKAGE / f"{pinned_version()}-native-baseline"
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        return wheels[-1]
    sdist = next((cache / "sdists").glob("*.tar.gz"))
    logger.info("building the native baseline wheel (llama-cpp-python's defaults; about 8 minutes)")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(folder), str(sdist)], env=env, check=True)
    return sorted(folder.glob("*.whl"))[-1]


def unpack(wheel: Path, target: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def decode(site: Path | None, model: Path, tokens: int) -> dict:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", DECODE, str(model), str(tokens)], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-wheel", type=Path, help="a native llama-cpp-python wheel (default: build one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    setup_logging()
    settings = load_settings()
    model = packaged_model_path(settings.cache_dir)
    wheel = args.baseline_wheel or baseline_wheel(settings.cache_dir)
    installed = json.loads(STATE_PATH.read_text())
    with tempfile.TemporaryDirectory(prefix="native-llama-") as folder:
        native_site = unpack(wheel, Path(folder))
        rates: dict[str, list[float]] = {"ours": [], "native": []}
        cpu_rates: dict[str, list[float]] = {"ours": [], "native": []}
        infos: dict[str, str] = {}
        for round_number in range(args.rounds):
            for name, site in (("ours", None), ("native", native_site)):
                result = decode(site, model, args.tokens)
                rates[name].append(result["rate"])
                cpu_rates[name].append(result["cpu_rate"])
                infos[name] = result["info"]
            logger.info(
                "round %d: ours %.1f tok/s (%.1f per CPU-second), native %.1f tok/s (%.1f per CPU-second)", round_number + 1,
                rates["ours"][-1], cpu_rates["ours"][-1], rates["native"][-1], cpu_rates["native"][-1],
            )
    ours, native = statistics.median(rates["ours"]), statistics.median(rates["native"])
    ours_cpu, native_cpu = statistics.median(cpu_rates["ours"]), statistics.median(cpu_rates["native"])
    logger.info("ours (%s build, %s): %s", installed["profile"], " ".join(installed["cmake_args"]), infos["ours"])
    logger.info("native (-march=native): %s", infos["native"])
    logger.info("median decode per CPU-second: ours %.1f, native %.1f: ratio %.3f", ours_cpu, native_cpu, ours_cpu / native_cpu)
    logger.info("median decode per wall second: ours %.1f, native %.1f: ratio %.3f", ours, native, ours / native)


if __name__ == "__main__":
    main()
