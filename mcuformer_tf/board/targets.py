"""The boards mcuformer-tf deploys to: memory sizes, the runtime's stated share of them and the
linker script that proves fit (DESIGN.md §6). One table for the tuner's budgets and `deploy`.

The runtime share lies outside TFLM's arena and the model: SRAM for the main stack (the
MCUF kernels' tables take up to 4.25 KiB of it), TFLM's objects (interpreter, op resolver, allocator)
and newlib's data; flash for the code (TFLM with the reference kernels of a ViT's builtins, the
MCUF glue and kernels, startup code, newlib-nano). The deployed digits demo linked with about
17 KiB of SRAM outside the arena and 105 KiB of code; the statement keeps a margin over both,
and the linker script checks the real sizes when a firmware is linked.

Each board carries its core's maximum clock (datasheet), for an estimate of an inference's time from
its instruction count (`milliseconds`): one instruction per cycle, no wait state, no dual issue, so
a count-based estimate, not a measurement.

One profile is for the emulator only: the disco board's layout with the 4 MiB of RAM that qemu's
mps2-an500 maps at 0x20000000, to run and count models that do not fit the chip (the instruction
counts do not depend on the RAM's size). `target` finds it; the boards' table (`TARGETS`, which the
tuner's budgets list) leaves it out.
"""
from __future__ import annotations

from dataclasses import dataclass

from mcuformer_tf.errors import McuformerError

KIB, MIB = 1024, 1024 * 1024
RUNTIME_SRAM = 24 * KIB
RUNTIME_FLASH = 192 * KIB


@dataclass(frozen=True)
class Target:
    """A board: its SRAM and flash, flash for the model outside the chip (0: the model sits in
    `flash`), its linker script (tflm_custom_ops/cortex_m7/), its core's maximum clock (Hz) and the
    runtime's share."""

    name: str
    sram: int
    flash: int
    external_flash: int
    linker_script: str
    about: str
    clock_hz: int
    runtime_sram: int = RUNTIME_SRAM
    runtime_flash: int = RUNTIME_FLASH

    def milliseconds(self, instructions: int) -> float:
        """The time of `instructions` at the core's maximum clock, one instruction per cycle."""
        return instructions / self.clock_hz * 1e3

    def time_estimate(self, instructions: int) -> str:
        """`milliseconds`, said as what it is."""
        return (f"{self.milliseconds(instructions):,.1f} ms at {self.clock_hz / 1e6:g} MHz "
                "(instruction-count estimate)")


STM32F746_CLOCK = 216_000_000  # STM32F746xx datasheet: Arm Cortex-M7 core up to 216 MHz
TARGETS = {
    "stm32f746": Target("stm32f746", 320 * KIB, MIB, 0, "stm32f746.ld",
                        "STM32F746: 320 KiB SRAM, 1 MiB internal flash", STM32F746_CLOCK),
    "stm32f746-disco": Target("stm32f746-disco", 320 * KIB, MIB, 16 * MIB, "stm32f746-disco.ld",
                              "STM32F746G-DISCO: 320 KiB SRAM, 1 MiB flash for code, the model "
                              "in the board's 16 MiB QSPI flash", STM32F746_CLOCK),
}
EMULATOR = "stm32f746-disco-emulator"
EMULATOR_TARGETS = {
    EMULATOR: Target(EMULATOR, 4 * MIB, MIB, 16 * MIB, "stm32f746-disco-emulator.ld",
                     "emulator only: the STM32F746G-DISCO's layout with qemu mps2-an500's 4 MiB of RAM",
                     STM32F746_CLOCK),
}


def target(name: str) -> Target:
    """The named board (or emulator profile), or a one-line error listing the known ones."""
    known = {**TARGETS, **EMULATOR_TARGETS}
    if name not in known:
        raise McuformerError(f"unknown target {name!r}; known: {', '.join(known)}")
    return known[name]
