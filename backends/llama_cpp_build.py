"""How llama-cpp-python is built on this machine: the one place for its build flags.

llama-cpp-python compiles llama.cpp at install time. Its default (`-march=native`) turns on every
instruction set the CPU *advertises*, and some hosts advertise Intel AMX that faults on first use
(`ldtilecfg` inside `ggml_backend_amx_mul_mat`: the server dies on its first request). So the build
names each x86 feature explicitly instead:

- `tuned`: every SIMD feature /proc/cpuinfo lists (AVX2, AVX-512, VNNI, BF16 ...), AMX only when a
  probe program has just executed AMX tile instructions on this very machine;
- `portable`: the x86-64-v3 set (SSE4.2, AVX, AVX2, FMA, F16C, BMI2) where present, nothing newer.

A built wheel is kept under the user's cache directory, keyed by the package version, the Python
tag and the exact CMake arguments: changed flags rebuild, unchanged flags reuse the wheel (a second
clone does not rebuild). pip's own wheel cache is bypassed, because it is keyed by the sdist alone
and would reinstall a wheel built with other flags.

This module uses the standard library only: run.sh runs it before anything else is installed.
`python -m backends.llama_cpp_build install` builds (or reuses) and installs the tuned build;
`python -m backends.llama_cpp_build check MODEL` decodes a few tokens of MODEL in a child process
and, if that child dies by a signal, rebuilds with the portable flags and checks again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends import nvidia_gpu_present
from backends.amx_probe import ProbeResult, describe_exit, probe_amx
from service.paths import default_cache_dir

logger = logging.getLogger("llama_cpp_build")

PACKAGE = "llama-cpp-python"
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "requirements-base.txt"

# CMake options llama-cpp-python gets on every machine: no vision library (this server has no
# vision models), so the build is shorter.
BASE_ARGS = ("-DLLAVA_BUILD=OFF",)


@dataclass(frozen=True)
class X86Feature:
    option: str  # ggml's CMake option
    cpu_flags: tuple[str, ...]  # /proc/cpuinfo flags it needs (ggml passes all of them to the compiler)
    portable: bool  # part of the portable (x86-64-v3) profile


X86_FEATURES = (
    X86Feature("GGML_SSE42", ("sse4_2",), True),
    X86Feature("GGML_AVX", ("avx",), True),
    X86Feature("GGML_AVX2", ("avx2",), True),
    X86Feature("GGML_FMA", ("fma",), True),
    X86Feature("GGML_F16C", ("f16c",), True),
    X86Feature("GGML_BMI2", ("bmi2",), True),
    X86Feature("GGML_AVX_VNNI", ("avx_vnni",), False),
    X86Feature("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), False),
    X86Feature("GGML_AVX512_VBMI", ("avx512vbmi",), False),
    X86Feature("GGML_AVX512_VNNI", ("avx512_vnni",), False),
    X86Feature("GGML_AVX512_BF16", ("avx512_bf16",), False),
)
AMX_FEATURES = (
    X86Feature("GGML_AMX_TILE", ("amx_tile",), False),
    X86Feature("GGML_AMX_INT8", ("amx_int8",), False),
    X86Feature("GGML_AMX_BF16", ("amx_bf16",), False),
)
PROFILES = ("tuned", "portable")
# What is installed in this venv and whether it passed the check (read by doctor and /admin/backends too).
STATE_PATH = Path(sys.prefix) / ".llama-cpp-build.json"

# Decodes a few tokens with the high-level API, which uses every extra buffer type the build has
# (the AMX path among them), exactly where a bad build faults.
SMOKE_SOURCE = """
import sys, llama_cpp
print(llama_cpp.llama_print_system_info().decode(errors="replace").strip(), flush=True)
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
out = llm.create_completion("The capital of France is", max_tokens=4, temperature=0)
print("decoded:", repr(out["choices"][0]["text"]), flush=True)
"""


class BuildError(RuntimeError):
    """The build or its check failed; the message names the cause and what to send in a report."""


# ---- what this machine is -----------------------------------------------------------------------


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


# ---- the flags ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    profile: str
    cmake_args: tuple[str, ...]
    notes: tuple[str, ...]  # why each choice was made, for the log and the README

    def key(self, version: str) -> str:
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
        material = json.dumps([PACKAGE, version, tag, list(self.cmake_args)])
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def plan_build(
    profile: str,
    flags: frozenset[str],
    *,
    x86: bool = True,
    gpu: bool = False,
    amx_probe: Callable[[frozenset[str]], ProbeResult] = probe_amx,
    user_args: str = "",
) -> BuildPlan:
    """The CMake arguments for `profile` on a CPU with `flags`."""
    if profile not in PROFILES:
        raise BuildError(f"unknown build profile {profile!r}; choose one of {PROFILES}")
    args: list[str] = list(BASE_ARGS)
    notes: list[str] = []
    if x86:
        args.append("-DGGML_NATIVE=OFF")  # never -march=native: it enables whatever the CPU advertises
        for feature in X86_FEATURES:
            wanted = profile == "tuned" or feature.portable
            args.append(f"-D{feature.option}={'ON' if wanted and _has(flags, feature) else 'OFF'}")
        amx = ProbeResult(False, "the portable profile never uses AMX")
        if profile == "tuned":
            amx = amx_probe(flags)
        args.extend(f"-D{feature.option}={'ON' if amx.works and _has(flags, feature) else 'OFF'}" for feature in AMX_FEATURES)
        notes.append(f"AMX {'on' if amx.works else 'off'}: {amx.reason}")
    elif profile == "portable":
        args.append("-DGGML_NATIVE=OFF")
    if gpu:
        args.append("-DGGML_CUDA=on")
        notes.append("CUDA on: an NVIDIA GPU is present")
    if user_args.strip():
        args.extend(user_args.split())  # the user's CMAKE_ARGS come last, so they win
        notes.append(f"CMAKE_ARGS from the environment added: {user_args.strip()}")
    return BuildPlan(profile, tuple(args), tuple(notes))


def _has(flags: frozenset[str], feature: X86Feature) -> bool:
    return all(flag in flags for flag in feature.cpu_flags)


def pinned_version(requirements: Path = REQUIREMENTS_FILE) -> str:
    """The llama-cpp-python version requirements-base.txt pins (the one place it is written)."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(rf"^\s*{re.escape(PACKAGE)}\s*==\s*([\w.]+)", line)
        if match:
            return match.group(1)
    raise BuildError(f"{requirements} does not pin {PACKAGE}==<version>")


# ---- building and installing -------------------------------------------------------------------


Runner = Callable[..., subprocess.CompletedProcess]


class Installer:
    """Builds, caches, installs and checks llama-cpp-python for the Python running this module."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        python: str = sys.executable,
        version: str | None = None,
        run: Runner = subprocess.run,
        state_path: Path | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.python = python
        self.version = version or pinned_version()
        self.run = run
        self.state_path = state_path or STATE_PATH

    # -- state: what is installed in this venv, and which builds crashed on this machine --

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, **state: object) -> None:
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    def wheel_dir(self, plan: BuildPlan) -> Path:
        return self.cache_dir / "wheels" / PACKAGE / f"{self.version}-{plan.key(self.version)}"

    def crashed(self, plan: BuildPlan) -> str | None:
        marker = self.wheel_dir(plan) / "CRASHED"
        return marker.read_text().strip() if marker.is_file() else None

    # -- steps --

    def plan(self, flags: frozenset[str] | None = None, **overrides: object) -> BuildPlan:
        """The tuned build, unless it already crashed on this machine: then the portable one."""
        flags = cpu_flags() if flags is None else flags
        options = {"x86": is_x86_64(), "gpu": nvidia_gpu_present(), "user_args": os.environ.get("CMAKE_ARGS", ""), **overrides}
        tuned = plan_build("tuned", flags, **options)  # type: ignore[arg-type]
        crash = self.crashed(tuned)
        if crash is None:
            return tuned
        logger.info("the tuned build crashed here before (%s): using the portable build", crash)
        return plan_build("portable", flags, **options)  # type: ignore[arg-type]

    def install(self, plan: BuildPlan) -> bool:
        """Install the build of `plan` unless it is the one installed. True when it installed."""
        key = plan.key(self.version)
        if self.state().get("key") == key and self._importable():
            logger.info("llama-cpp-python %s (%s build) is installed", self.version, plan.profile)
            return False
        for note in plan.notes:
            logger.info("llama.cpp build: %s", note)
        wheel = self._cached_wheel(plan) or self._build(plan)
        pip = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        self._call([*pip, "--force-reinstall", "--no-deps", str(wheel)], "installing the llama-cpp-python wheel")
        self._call([*pip, str(wheel)], "installing llama-cpp-python's dependencies")
        self._save_state(key=key, profile=plan.profile, cmake_args=list(plan.cmake_args), wheel=str(wheel), checked=False)
        logger.info("installed llama-cpp-python %s, %s build (%s)", self.version, plan.profile, wheel.name)
        return True

    def check(self, model: Path, flags: frozenset[str] | None = None) -> str:
        """Decode a few tokens in a child process; on a crash, fall back to the portable build.
        Returns the build's system info line."""
        state = self.state()
        if state.get("checked") and state.get("system_info"):
            return str(state["system_info"])
        result = self.smoke(model)
        if result.returncode == 0:
            return self._mark_checked(state, result.stdout)
        if result.returncode > 0:
            raise BuildError(
                f"the llama.cpp check could not run ({describe_exit(result.returncode)}): {_tail(result.stdout)}"
            )
        cause = describe_exit(result.returncode)
        logger.warning(
            "llama.cpp check: decoding %s was %s with the %s build; rebuilding with the portable flags",
            model.name, cause, state.get("profile", "installed"),
        )
        crashed_build = self.cache_dir / "wheels" / PACKAGE / f"{self.version}-{state.get('key')}"
        if crashed_build.is_dir():  # remembered, so the next run goes straight to the portable build
            (crashed_build / "CRASHED").write_text(f"{cause} while decoding {model.name}\n")
        if state.get("profile") == "portable":
            raise BuildError(self._report(cause, result.stdout, state))
        self.install(self.plan(flags))
        state = self.state()
        result = self.smoke(model)
        if result.returncode != 0:
            raise BuildError(self._report(describe_exit(result.returncode), result.stdout, state))
        return self._mark_checked(state, result.stdout)

    def smoke(self, model: Path) -> subprocess.CompletedProcess:
        return self.run([self.python, "-c", SMOKE_SOURCE, str(model)], capture_output=True, text=True, timeout=600)

    # -- helpers --

    def _mark_checked(self, state: dict, output: str) -> str:
        info = next((line for line in output.splitlines() if "CPU" in line or "AVX" in line or "=" in line), output.strip())
        self._save_state(**{**state, "checked": True, "system_info": info})
        logger.info("llama.cpp check passed (%s build): %s", state.get("profile"), info)
        return info

    def _report(self, cause: str, output: str, state: dict) -> str:
        return (
            f"llama.cpp still fails with the portable build: decoding was {cause}. This machine cannot run this "
            f"llama-cpp-python build. Please report it with: this message, the 'flags' line of /proc/cpuinfo, "
            f"the build flags {state.get('cmake_args')}, the kernel log (dmesg | grep traps) and the output: {_tail(output)}"
        )

    def _importable(self) -> bool:
        return self.run([self.python, "-c", "import llama_cpp"], capture_output=True).returncode == 0

    def _cached_wheel(self, plan: BuildPlan) -> Path | None:
        wheels = sorted(self.wheel_dir(plan).glob("*.whl"))
        if wheels:
            logger.info("reusing the llama-cpp-python wheel built with these flags: %s", wheels[-1])
        return wheels[-1] if wheels else None

    def _build(self, plan: BuildPlan) -> Path:
        target = self.wheel_dir(plan)
        target.parent.mkdir(parents=True, exist_ok=True)
        sdist = self._sdist()
        log_path = target.parent / f"{target.name}.build.log"
        logger.info(
            "building llama-cpp-python %s (%s build; about 8 minutes on 2 cores); log: %s", self.version, plan.profile, log_path
        )
        env = {**os.environ, "CMAKE_ARGS": " ".join(plan.cmake_args), "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        with tempfile.TemporaryDirectory(prefix=f"{target.name}.", dir=target.parent) as scratch:
            command = [self.python, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "--no-cache-dir", "-w", scratch, str(sdist)]
            with log_path.open("w") as log:
                built = self.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            if built.returncode != 0:
                raise BuildError(f"building llama-cpp-python failed; the end of {log_path}:\n{_tail(log_path.read_text(), 30)}")
            Path(scratch).rename(target)  # complete or absent: a broken build never looks cached
        return next(target.glob("*.whl"))

    def _sdist(self) -> Path:
        folder = self.cache_dir / "sdists"
        existing = sorted(folder.glob(f"{PACKAGE.replace('-', '_')}-{self.version}.tar.gz"))
        if existing:
            return existing[0]
        folder.mkdir(parents=True, exist_ok=True)
        self._call(
            [self.python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(folder), f"{PACKAGE}=={self.version}"],
            f"downloading the {PACKAGE} {self.version} source",
        )
        return sorted(folder.glob(f"{PACKAGE.replace('-', '_')}-{self.version}.tar.gz"))[0]

    def _call(self, command: Sequence[str], what: str) -> None:
        result = self.run(list(command), capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"{what} failed: {_tail(result.stdout + result.stderr)}")


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.llama_cpp_build", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="build (or reuse) and install the build for this machine")
    check = commands.add_parser("check", help="decode a few tokens in a child; on a crash rebuild portable")
    check.add_argument("model", type=Path, help="a GGUF model to decode with")
    commands.add_parser("plan", help="print the CMake arguments this machine gets, and why")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[llama.cpp build] %(message)s")
    installer = Installer(Path(os.environ.get("JARVIS_CACHE_DIR") or default_cache_dir()))
    try:
        if args.command == "plan":
            plan = installer.plan()
            sys.stdout.write(json.dumps({"profile": plan.profile, "cmake_args": plan.cmake_args, "notes": plan.notes}, indent=2) + "\n")
        elif args.command == "install":
            installer.install(installer.plan())
        else:
            installer.check(args.model)
    except BuildError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
