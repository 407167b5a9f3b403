"""Whether Intel AMX works on this machine: a tiny program that asks the kernel for the tile
state and runs an int8 tile product, compiled and executed in a child process. A CPU can
advertise AMX that faults on first use (a hypervisor that does not enable the tile state): only a
probe that ran tells."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Executes AMX tile instructions (an int8 tile product) after asking the kernel for the tile
# state, as ggml does. Exit 0 and "ok" only when the result is right.
AMX_PROBE_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
struct tile_config { uint8_t palette_id; uint8_t start_row; uint8_t reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; };
int main(void) {
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) { puts("no tile permission"); return 3; }
    struct tile_config config; memset(&config, 0, sizeof config);
    config.palette_id = 1;
    for (int tile = 0; tile < 3; tile++) { config.rows[tile] = 16; config.colsb[tile] = 64; }
    static int8_t a[16 * 64] __attribute__((aligned(64))), b[16 * 64] __attribute__((aligned(64)));
    static int32_t c[16 * 16] __attribute__((aligned(64)));
    memset(a, 1, sizeof a); memset(b, 2, sizeof b);
    _tile_loadconfig(&config);
    _tile_zero(0);
    _tile_loadd(1, a, 64);
    _tile_loadd(2, b, 64);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
    for (int i = 0; i < 16 * 16; i++) if (c[i] != 128) { printf("wrong result %d\n", c[i]); return 4; }
    puts("ok");
    return 0;
}
"""



@dataclass(frozen=True)
class ProbeResult:
    works: bool
    reason: str


def probe_amx(flags: frozenset[str], compiler: str = "cc") -> ProbeResult:
    """Whether AMX tile instructions run on this machine: compiled and executed in a child."""
    if "amx_tile" not in flags or "amx_int8" not in flags:
        return ProbeResult(False, "the CPU does not advertise AMX")
    if shutil.which(compiler) is None:
        return ProbeResult(False, f"no C compiler ({compiler}) to probe AMX with")
    with tempfile.TemporaryDirectory(prefix="amx-probe-") as folder:
        source, binary = Path(folder) / "probe.c", Path(folder) / "probe"
        source.write_text(AMX_PROBE_SOURCE)
        built = subprocess.run([compiler, "-O1", "-mamx-tile", "-mamx-int8", str(source), "-o", str(binary)], capture_output=True, text=True)
        if built.returncode != 0:
            return ProbeResult(False, f"the AMX probe did not compile: {built.stderr.strip()[:200]}")
        try:
            ran = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return ProbeResult(False, "the AMX probe hung")
    if ran.returncode == 0 and ran.stdout.strip() == "ok":
        return ProbeResult(True, "the AMX probe ran tile instructions correctly on this machine")
    return ProbeResult(False, f"the CPU advertises AMX but the probe failed ({describe_exit(ran.returncode)}: {ran.stdout.strip()})")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
