"""The boards mcuformer-tf deploys to: memory sizes, the runtime's stated share of them and the
linker script that proves fit (DESIGN.md §6). One table for the tuner's budgets and `deploy`.

The runtime share lies outside TFLM's arena and the model: SRAM for the main stack (the
MCUF kernels' tables take up to 4.25 KiB of it), TFLM's objects (interpreter, op resolver, allocator)
and newlib's data; flash for the code (TFLM with the reference kernels of a ViT's builtins, the
MCUF glue and kernels, startup code, newlib-nano). The deployed digits demo linked with about
17 KiB of SRAM outside the arena and 105 KiB of code; the statement keeps a margin over both,
and the linker script checks the real sizes when a firmware is linked.

Each board carries its core (`Core`: the compiler's CPU flags and the qemu machine that emulates it:
mps2-an500 for the Cortex-M7, mps2-an386 for the Cortex-M4) and its maximum clock (datasheet), for an
estimate of an inference's time from its instruction count (`milliseconds`): one instruction per
cycle, no wait state, no dual issue, so a count-based estimate, not a measurement.

`sram` is the contiguous SRAM that holds the arena (with TFLM's objects and, where `stack_sram` is 0,
the stack). Chips with split SRAM put the stack in a core-coupled RAM beside it (`stack_sram`): the
STM32F427's 256 KiB are 192 KiB of contiguous SRAM1-3 (the arena) and 64 KiB of CCM (the stack); the
STM32H743's arena takes its 512 KiB of AXI SRAM, the stack its 128 KiB DTCM, and SRAM1-4 (352 KiB)
stay free for the application. Their runtime share of `sram` is TFLM's objects and newlib's data
alone (8 KiB).

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
STACK = 16 * KIB  # sections.ld's STACK_SIZE, part of RUNTIME_SRAM where the stack shares the arena's SRAM


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: gcc's CPU flags (hard float, Thumb) and the qemu machine that emulates it."""

    name: str
    cpu_flags: tuple
    machine: str


CORTEX_M7 = Core("cortex-m7", ("-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard", "-mthumb"), "mps2-an500")
CORTEX_M4 = Core("cortex-m4", ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb"), "mps2-an386")


@dataclass(frozen=True)
class Target:
    """A board: its SRAM for the arena and flash, flash for the model outside the chip (0: the model
    sits in `flash`), its linker script (tflm_custom_ops/cortex_m7/), its core's maximum clock (Hz),
    its core, SRAM for the stack outside `sram` (0: the stack is in `sram`) and the runtime's share."""

    name: str
    sram: int
    flash: int
    external_flash: int
    linker_script: str
    about: str
    clock_hz: int
    core: Core = CORTEX_M7
    stack_sram: int = 0
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
STM32F427_CLOCK = 180_000_000  # STM32F427xx datasheet: Arm Cortex-M4 with FPU up to 180 MHz
STM32H743_CLOCK = 480_000_000  # STM32H743xI datasheet: Arm Cortex-M7 up to 480 MHz
TARGETS = {
    "stm32f427": Target("stm32f427", 192 * KIB, MIB, 0, "stm32f427.ld",
                        "STM32F427 (Cortex-M4F): 256 KiB SRAM (192 KiB SRAM1-3 for the arena, 64 KiB CCM "
                        "for the stack), 1 MiB flash", STM32F427_CLOCK, CORTEX_M4, 64 * KIB,
                        RUNTIME_SRAM - STACK),
    "stm32f746": Target("stm32f746", 320 * KIB, MIB, 0, "stm32f746.ld",
                        "STM32F746: 320 KiB SRAM, 1 MiB internal flash", STM32F746_CLOCK),
    "stm32f746-disco": Target("stm32f746-disco", 320 * KIB, MIB, 16 * MIB, "stm32f746-disco.ld",
                              "STM32F746G-DISCO: 320 KiB SRAM, 1 MiB flash for code, the model "
                              "in the board's 16 MiB QSPI flash", STM32F746_CLOCK),
    "stm32h743": Target("stm32h743", 512 * KIB, 2 * MIB, 0, "stm32h743.ld",
                        "STM32H743 (Cortex-M7): 512 KiB AXI SRAM for the arena, the stack in the 128 KiB "
                        "DTCM (SRAM1-4 free), 2 MiB flash", STM32H743_CLOCK, CORTEX_M7, 128 * KIB,
                        RUNTIME_SRAM - STACK),
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
