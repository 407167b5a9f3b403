"""The llama.cpp build: flags chosen from the CPU, AMX only after a probe, wheels reused by flags,
and the decode check that falls back to the portable build when the tuned one crashes. The last
tests check the build installed in this venv, on whatever machine runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.llama_cpp_build import (
    STATE_PATH,
    BuildError,
    Installer,
    ProbeResult,
    cpu_flags,
    plan_build,
    probe_amx,
)

SAPPHIRE_RAPIDS = frozenset(
    ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
)
HASWELL = frozenset(["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"])


def flag(args: tuple[str, ...], option: str) -> str:
    return next(arg.split("=")[1] for arg in args if arg.startswith(f"-D{option}="))


def test_never_march_native_and_amx_off_when_the_probe_fails() -> None:
    plan = plan_build("tuned", SAPPHIRE_RAPIDS, amx_probe=lambda flags: ProbeResult(False, "faulted"))
    assert "-DGGML_NATIVE=OFF" in plan.cmake_args
    assert flag(plan.cmake_args, "GGML_AVX512") == "ON" and flag(plan.cmake_args, "GGML_AVX512_VNNI") == "ON"
    assert {flag(plan.cmake_args, f"GGML_AMX_{kind}") for kind in ("TILE", "INT8", "BF16")} == {"OFF"}
    assert any("AMX off: faulted" in note for note in plan.notes)


def test_amx_on_only_where_the_probe_ran_it() -> None:
    plan = plan_build("tuned", SAPPHIRE_RAPIDS, amx_probe=lambda flags: ProbeResult(True, "ran"))
    assert {flag(plan.cmake_args, f"GGML_AMX_{kind}") for kind in ("TILE", "INT8", "BF16")} == {"ON"}


def test_the_portable_profile_stops_at_avx2() -> None:
    plan = plan_build("portable", SAPPHIRE_RAPIDS, amx_probe=lambda flags: pytest.fail("portable never probes AMX"))
    assert flag(plan.cmake_args, "GGML_AVX2") == "ON" and flag(plan.cmake_args, "GGML_FMA") == "ON"
    assert flag(plan.cmake_args, "GGML_AVX512") == "OFF" and flag(plan.cmake_args, "GGML_AMX_INT8") == "OFF"


def test_features_the_cpu_lacks_are_off() -> None:
    plan = plan_build("tuned", HASWELL, amx_probe=probe_amx)
    assert flag(plan.cmake_args, "GGML_AVX2") == "ON"
    assert flag(plan.cmake_args, "GGML_AVX512") == "OFF" and flag(plan.cmake_args, "GGML_AVX_VNNI") == "OFF"
    assert any("does not advertise AMX" in note for note in plan.notes)


def test_gpu_and_user_args_and_the_wheel_key() -> None:
    plain = plan_build("tuned", HASWELL)
    cuda = plan_build("tuned", HASWELL, gpu=True, user_args="-DGGML_BLAS=ON")
    assert cuda.cmake_args[-2:] == ("-DGGML_CUDA=on", "-DGGML_BLAS=ON")  # the user's args come last
    assert plain.key("0.3.36") != cuda.key("0.3.36") != cuda.key("0.3.37")
    assert plain.key("0.3.36") == plan_build("tuned", HASWELL).key("0.3.36")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: run.sh needs one to build llama.cpp anyway")
def test_the_amx_probe_runs_on_this_machine() -> None:
    """Forces the probe (as if the CPU advertised AMX) and runs it here. A CPU without AMX must
    fail it; where the CPU has AMX the verdict must match the build installed in this venv."""
    result = probe_amx(frozenset({"amx_tile", "amx_int8"}))
    if "amx_tile" not in cpu_flags():
        assert not result.works, result.reason
        assert "probe failed" in result.reason
    else:
        installed = json.loads(STATE_PATH.read_text())["cmake_args"]
        assert result.works == ("-DGGML_AMX_INT8=ON" in installed), result.reason


# ---- the installer, with pip and the decode check replaced -------------------------------------


class FakeRunner:
    """Stands in for subprocess.run: pip builds write a wheel; the decode check crashes for the
    builds named in `crashing` (by their AVX-512 flag)."""

    def __init__(self, crashing: set[str]) -> None:
        self.crashing = crashing
        self.builds: list[str] = []
        self.installed_args = ""
        self.checks = 0

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        joined = " ".join(command)
        if " wheel " in f" {joined} ":
            args = kwargs["env"]["CMAKE_ARGS"]  # type: ignore[index]
            self.builds.append(args)
            out = Path(command[command.index("-w") + 1])
            (out / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_text(args)
        elif " download " in f" {joined} ":
            folder = Path(command[command.index("-d") + 1])
            (folder / "llama_cpp_python-0.3.36.tar.gz").write_text("sdist")
        elif "--force-reinstall" in command:
            self.installed_args = Path(command[-1]).read_text()
        elif "-c" in command and "import llama_cpp" in command[command.index("-c") + 1]:
            return subprocess.CompletedProcess(command, 0, "", "")
        elif "-c" in command:  # the decode check
            self.checks += 1
            profile = "tuned" if "GGML_AVX512=ON" in self.installed_args else "portable"
            if profile in self.crashing:
                return subprocess.CompletedProcess(command, -11, "CPU : AVX2 = 1 |\n", "")
            return subprocess.CompletedProcess(command, 0, f"CPU : AVX2 = 1 | {profile}\ndecoded: ' Paris'\n", "")
        return subprocess.CompletedProcess(command, 0, "", "")


def make_installer(tmp_path: Path, runner: FakeRunner) -> Installer:
    return Installer(tmp_path / "cache", python=sys.executable, version="0.3.36", run=runner, state_path=tmp_path / "state.json")


def no_probe(flags: frozenset[str]) -> ProbeResult:
    return ProbeResult(False, "not probed")


def test_a_crashing_build_is_rebuilt_portable_and_remembered(tmp_path: Path) -> None:
    runner = FakeRunner(crashing={"tuned"})
    installer = make_installer(tmp_path, runner)
    assert installer.install(installer.plan(SAPPHIRE_RAPIDS, amx_probe=no_probe, gpu=False, user_args=""))
    info = installer.check(tmp_path / "model.gguf", SAPPHIRE_RAPIDS)
    assert "portable" in info and runner.checks == 2 and len(runner.builds) == 2
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["profile"] == "portable" and state["checked"] is True
    assert list((tmp_path / "cache").rglob("CRASHED")), "the crash is remembered next to the tuned wheel"
    # The next set-up goes straight to the portable build, and reuses its wheel: no third build.
    plan = installer.plan(SAPPHIRE_RAPIDS, amx_probe=no_probe, gpu=False, user_args="")
    assert plan.profile == "portable"
    assert installer.install(plan) is False and len(runner.builds) == 2


def test_a_build_that_still_crashes_stops_with_a_report(tmp_path: Path) -> None:
    runner = FakeRunner(crashing={"tuned", "portable"})
    installer = make_installer(tmp_path, runner)
    installer.install(installer.plan(SAPPHIRE_RAPIDS, amx_probe=no_probe, gpu=False, user_args=""))
    with pytest.raises(BuildError) as raised:
        installer.check(tmp_path / "model.gguf", SAPPHIRE_RAPIDS)
    message = str(raised.value)
    assert "SIGSEGV" in message and "/proc/cpuinfo" in message and "dmesg" in message


def test_unchanged_flags_reuse_the_wheel_and_changed_flags_rebuild(tmp_path: Path) -> None:
    runner = FakeRunner(crashing=set())
    installer = make_installer(tmp_path, runner)
    tuned = installer.plan(SAPPHIRE_RAPIDS, amx_probe=no_probe, gpu=False, user_args="")
    assert installer.install(tuned) and len(runner.builds) == 1
    assert installer.install(tuned) is False  # installed already
    (tmp_path / "state.json").unlink()  # a new venv on the same machine: the cached wheel, no build
    assert installer.install(tuned) and len(runner.builds) == 1
    changed = installer.plan(SAPPHIRE_RAPIDS, amx_probe=no_probe, gpu=False, user_args="-DGGML_LTO=ON")
    assert installer.install(changed) and len(runner.builds) == 2


# ---- the build installed here -----------------------------------------------------------------


def _system_info() -> str:
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_the_installed_build_matches_this_cpu_and_has_no_amx_unless_probed() -> None:
    state = json.loads(STATE_PATH.read_text())
    assert state["checked"] is True, "run.sh's decode check passed for this build"
    flags = cpu_flags()
    info = _system_info()
    assert ("AVX2 = 1" in info) == ("avx2" in flags)
    has_avx512 = all(f in flags for f in ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"))
    assert ("AVX512 = 1" in info) == (has_avx512 and state["profile"] == "tuned")
    import llama_cpp

    library = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    disassembly = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    tile_instructions = disassembly.count("ldtilecfg")
    assert (tile_instructions > 0) == ("-DGGML_AMX_TILE=ON" in state["cmake_args"]), tile_instructions


def test_a_second_set_up_does_not_rebuild() -> None:
    """What run.sh does on its next run: the plan for this machine is the build installed."""
    installer = Installer(Path("/nonexistent-cache"))  # a build would need the cache: it must not be touched
    plan = installer.plan()
    assert installer.install(plan) is False
