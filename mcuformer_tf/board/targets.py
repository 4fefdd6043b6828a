"""The boards mcuformer-tf deploys to: memory sizes, the runtime's stated share of them and the
linker script that proves fit (DESIGN.md §6). One table for the tuner's budgets and `deploy`.

The runtime share lies outside TFLM's arena and the model: SRAM for the main stack (the
MCUF kernels' tables take up to 4.25 KiB of it), TFLM's objects (interpreter, op resolver, allocator)
and newlib's data; flash for the code (TFLM with the reference kernels of a ViT's builtins, the
MCUF glue and kernels, startup code, newlib-nano). The deployed digits demo linked with about
17 KiB of SRAM outside the arena and 105 KiB of code; the statement keeps a margin over both,
and the linker script checks the real sizes when a firmware is linked.
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
    `flash`), the runtime's share, and its linker script (tflm_custom_ops/cortex_m7/)."""

    name: str
    sram: int
    flash: int
    external_flash: int
    linker_script: str
    about: str
    runtime_sram: int = RUNTIME_SRAM
    runtime_flash: int = RUNTIME_FLASH


TARGETS = {
    "stm32f746": Target("stm32f746", 320 * KIB, MIB, 0, "stm32f746.ld",
                        "STM32F746: 320 KiB SRAM, 1 MiB internal flash"),
    "stm32f746-disco": Target("stm32f746-disco", 320 * KIB, MIB, 16 * MIB, "stm32f746-disco.ld",
                              "STM32F746G-DISCO: 320 KiB SRAM, 1 MiB flash for code, the model "
                              "in the board's 16 MiB QSPI flash"),
}


def target(name: str) -> Target:
    """The named board, or a one-line error listing the known ones."""
    if name not in TARGETS:
        raise McuformerError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]
