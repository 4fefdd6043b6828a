"""Cortex-M firmware: build with Debian's gcc-arm-none-eabi, link for a target board, run in qemu.

`build` compiles C sources for the target's core (Cortex-M7: -mcpu=cortex-m7 -mfpu=fpv5-sp-d16;
Cortex-M4: -mcpu=cortex-m4 -mfpu=fpv4-sp-d16; -mfloat-abi=hard, -O2, the DSP extension on unless
`dsp=False`, which builds the kernels' portable C loops) with the bare-metal runtime of
tflm_custom_ops/cortex_m7 (startup, semihosting, instruction counter; the same on both cores) and
links it with the target's linker script, which has the chip's sizes: the linker proves that the
firmware fits (or the build fails, with the linker's numbers, in one line). `run` boots it in
`qemu-system-arm` on the core's machine (mps2-an500: Cortex-M7, mps2-an386: Cortex-M4; both clock
the processor at 25 MHz) with semihosting and `-icount shift=0`, so instruction counts are
deterministic.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mcuformer_tf.board.targets import target
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.host_runner import SOURCES_DIR

RUNTIME_DIR = SOURCES_DIR / "cortex_m7"
INCLUDE_DIR = SOURCES_DIR / "include"
LIBRARY_SOURCES = tuple(sorted((SOURCES_DIR / "src").glob("*.c")))
RUNTIME_SOURCES = (RUNTIME_DIR / "startup.c", RUNTIME_DIR / "m7_runtime.c")
TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
APT_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "libstdc++-arm-none-eabi-newlib",
                "qemu-system-arm")
C_FLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections")


INSTRUCTIONS_PER_TICK = 40  # m7_runtime.h: SysTick at mps2-an500's (and an386's) 25 MHz, 1 ns per instruction


def toolchain_missing() -> str | None:
    """Why Cortex-M7 firmware cannot be built and run here, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not found: install Debian's {' '.join(APT_PACKAGES)} "
                f"(make test does)")
    return None


@dataclass
class Firmware:
    elf: Path
    usage: dict  # memory region -> bytes used, as the linker reports them


def _region_bytes(size: str, unit: str) -> int:
    return int(float(size) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit])


def build(sources, elf: Path, target_name: str = "stm32f746", include_dirs=(), dsp: bool = True,
          extra_flags=()) -> Firmware:
    """Compiles and links C `sources` (with the MCUF library and the runtime) into `elf` for a target."""
    reason = toolchain_missing()
    if reason:
        raise McuformerError(reason)
    elf = Path(elf)
    elf.parent.mkdir(parents=True, exist_ok=True)
    chip = target(target_name)
    command = ["arm-none-eabi-gcc", *chip.core.cpu_flags, *C_FLAGS, *([] if dsp else ["-DMCUF_PORTABLE"]),
               *extra_flags, f"-I{INCLUDE_DIR}", f"-I{RUNTIME_DIR}", *(f"-I{d}" for d in include_dirs),
               *map(str, LIBRARY_SOURCES), *map(str, RUNTIME_SOURCES), *map(str, sources),
               "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections", f"-L{RUNTIME_DIR}",
               f"-T{RUNTIME_DIR / chip.linker_script}", "-Wl,--print-memory-usage", "-o", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        overflow = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", result.stderr)
        if overflow:
            raise McuformerError(f"the firmware does not fit {chip.name}: " + ", ".join(
                f"{region} overflowed by {int(n)} bytes" for region, n in overflow))
        lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        raise McuformerError(f"arm-none-eabi-gcc failed: {(lines or result.stderr.splitlines() or ['?'])[0]}")
    return Firmware(elf, parse_usage(result.stdout))


def parse_usage(linker_output: str) -> dict:
    """Memory region -> bytes used, from the output of ld's --print-memory-usage."""
    return {region: _region_bytes(size, unit) for region, size, unit in
            re.findall(r"^\s*(\w+):\s+([\d.]+) (B|KB|MB|GB)\s", linker_output, re.MULTILINE)}


@dataclass
class Run:
    output: str  # what the firmware wrote through semihosting
    exit_code: int


def run(elf: Path, timeout: float = 300, target_name: str = "stm32f746") -> Run:
    """Boots `elf` on the qemu machine of the target's core with semihosting and -icount shift=0."""
    core = target(target_name).core
    command = ["qemu-system-arm", "-machine", core.machine, "-cpu", core.name, "-nographic",
               "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0", "-kernel", str(elf)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise McuformerError(f"{Path(elf).name} did not finish within {timeout:.0f} s in qemu") from None
    # QEMU 7.2 writes semihosting output to stderr; later versions may use stdout.
    return Run(result.stdout + result.stderr, result.returncode)
