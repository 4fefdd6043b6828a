"""Memory and latency budgets of a target board, and the check every candidate subnet must pass
(DESIGN.md §6).

A `Target` (mcuformer_tf.board.targets) is a named profile: SRAM, internal flash, flash for weights outside
the chip (the STM32F746-DISCO's 16 MiB QSPI) and the runtime's own share of
both, which lies outside the TFLM arena and the model. A `Budget` is a target
with the user's overrides and a memory plan: `unfused` (stock TFLM, builtins
only) or `fused` (our MCUF operators and offline plan). `Budget.check(config)`
predicts the subnet's arena and flash with the memory model (no conversion, no
TFLM; thousands of configs per second) and says whether and why it fits:

    SRAM:  arena + runtime SRAM          <= sram
    flash: model + runtime code          <= flash            (weights on chip)
           model <= external flash, runtime code <= flash    (weights in QSPI)

A latency budget (`latency_ms`) adds a third condition: the latency model's instructions of one
inference of the fused model (board.latency, on the Cortex-M7's DSP loops) over the clock (the
target's, or the user's) must take at most that many milliseconds. Every verdict carries the
estimate, with a budget or without.

Sizes given by a user are parsed by `parse_size`: `320KiB`, `1MiB`, `0.5MB`,
`300000` (bytes); KiB = 1024 bytes, kB = 1000 bytes. Durations by `parse_duration` (`800ms`,
`1.5s`), clocks by `parse_clock` (`216MHz`, `480 MHz`, `180000000`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal

from mcuformer_tf.board import latency
from mcuformer_tf.board.targets import KIB, MIB, RUNTIME_SRAM, TARGETS, Target
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory.estimate import Footprint, memory_of
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
          "kib": KIB, "mib": MIB, "gib": 1024 ** 3}
MEMORY_PLANS = ("fused", "unfused")
_DURATIONS = {"": 1.0, "ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}  # a bare number: ms
_CLOCKS = {"": 1, "hz": 1, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}


def _number_and_unit(text: str, units: dict, what: str, example: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([A-Za-zµ]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in units or float(match.group(1)) <= 0:
        raise McuformerError(f"{what} {text!r} is not {example}")
    return float(match.group(1)) * units[unit]


def parse_duration(text: str, what: str = "--latency") -> float:
    """Milliseconds in `text`: a positive number and a unit (ms, s, us; none: ms)."""
    return _number_and_unit(text, _DURATIONS, what, "a duration: give a number and a unit, as in 800ms or 1.5s")


def parse_clock(text: str, what: str = "--clock") -> int:
    """Hertz in `text`: a positive number and an optional unit (Hz, kHz, MHz, GHz)."""
    return round(_number_and_unit(text, _CLOCKS, what, "a clock: give a number and a unit, as in 216MHz"))


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in `text`: a number and an optional unit (B, kB, MB, GB, KiB, MiB, GiB)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise McuformerError(f"{what} {text!r} is not a size: give a number and a unit, as in "
                             "320KiB, 1MiB, 0.5MB or 300000 (bytes)")
    value = Decimal(match.group(1)) * _UNITS[unit]  # the pattern admits decimal numbers only
    if value != int(value) or value < 1:
        raise McuformerError(f"{what} {text!r} is not a positive whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    return f"{n / MIB:.2f} MiB" if n >= MIB else f"{n / KIB:.1f} KiB"


CUSTOM = "custom"


def resolve_target(name: str, sram: str | None = None, flash: str | None = None) -> Target:
    """A named profile with optional --sram/--flash overrides; `custom` needs both."""
    if name == CUSTOM:
        if sram is None or flash is None:
            raise McuformerError("target custom needs both --sram and --flash")
        base = replace(TARGETS["stm32f746"], name=CUSTOM, about="custom Cortex-M7 board")
    elif name in TARGETS:
        base = TARGETS[name]
    else:
        raise McuformerError(f"unknown target {name!r} (known: {', '.join(TARGETS)}, {CUSTOM})")
    if sram is not None:
        base = replace(base, sram=parse_size(sram, "--sram"))
    if flash is not None:
        base = replace(base, flash=parse_size(flash, "--flash"))
    if base.runtime_sram >= base.sram:
        raise McuformerError(f"--sram {format_size(base.sram)} leaves nothing for the arena: "
                             f"the runtime outside it takes {format_size(base.runtime_sram)}")
    if base.runtime_flash >= base.flash:
        raise McuformerError(f"--flash {format_size(base.flash)} leaves nothing for the model: "
                             f"the runtime code takes {format_size(base.runtime_flash)}")
    return base


def footprint(config: SubnetConfig, plan: str) -> Footprint:
    """The predicted footprint of `config` under the `fused` or `unfused` memory plan."""
    estimate = memory_of(config)
    return estimate.unfused if plan == "unfused" else estimate.fused


@dataclass(frozen=True)
class Verdict:
    """Predicted bytes, cost and time of one subnet, and whether it fits the budget (else why not)."""

    arena: int  # the arena the model runs with (the memory model's working_arena)
    flash: int  # the model (.tflite)
    macs: int
    instructions: int  # of one inference of the fused model (the latency model)
    sram_used: int  # arena + runtime SRAM
    flash_used: int  # what lands in the internal flash
    reason: str | None  # None: it fits

    @property
    def fits(self) -> bool:
        return self.reason is None

    def metrics(self) -> dict:
        return {"arena": self.arena, "flash": self.flash, "macs": self.macs, "instructions": self.instructions}


@dataclass(frozen=True)
class Budget:
    target: Target
    plan: str = "fused"
    latency_ms: float | None = None  # None: no latency budget
    clock_hz: int | None = None  # None: the target's

    def __post_init__(self):
        if self.plan not in MEMORY_PLANS:
            raise McuformerError(f"unknown memory plan {self.plan!r} "
                                 f"(use one of: {', '.join(MEMORY_PLANS)})")

    @property
    def clock(self) -> int:
        return self.clock_hz or self.target.clock_hz

    def milliseconds(self, instructions: int) -> float:
        return instructions / self.clock * 1e3

    def latency_reason(self, instructions: int) -> str | None:
        """Why `instructions` take longer than the latency budget, or None."""
        ms = self.milliseconds(instructions)
        if self.latency_ms is None or ms <= self.latency_ms:
            return None
        return (f"latency {ms:,.1f} ms ({instructions / 1e6:,.1f} M instructions at "
                f"{self.clock / 1e6:g} MHz) > {self.latency_ms:g} ms")

    def check(self, config: SubnetConfig) -> Verdict:
        used = footprint(config, self.plan)
        t = self.target
        arena = used.working_arena
        sram_used = arena + t.runtime_sram
        reasons = []
        if sram_used > t.sram:
            reasons.append(f"SRAM {format_size(sram_used)} (arena {format_size(arena)} + "
                           f"runtime {format_size(t.runtime_sram)}) > {format_size(t.sram)}")
        if t.external_flash:
            flash_used = t.runtime_flash
            if used.flash > t.external_flash:
                reasons.append(f"model {format_size(used.flash)} > external flash "
                               f"{format_size(t.external_flash)}")
        else:
            flash_used = used.flash + t.runtime_flash
            if flash_used > t.flash:
                reasons.append(f"flash {format_size(flash_used)} (model "
                               f"{format_size(used.flash)} + runtime code "
                               f"{format_size(t.runtime_flash)}) > {format_size(t.flash)}")
        instructions = latency.instructions(config)
        reasons += [r for r in [self.latency_reason(instructions)] if r]
        return Verdict(arena, used.flash, config.mac_count(), instructions, sram_used, flash_used,
                       "; ".join(reasons) or None)

    def describe(self) -> str:
        t = self.target
        flash = (f"flash {format_size(t.flash)} for code, the model in "
                 f"{format_size(t.external_flash)} external flash" if t.external_flash
                 else f"flash {format_size(t.flash)}")
        time = (f", latency {self.latency_ms:g} ms at {self.clock / 1e6:g} MHz (the latency model, "
                f"{latency.describe_error()})" if self.latency_ms is not None else "")
        return (f"{t.name}: SRAM {format_size(t.sram)} (runtime {format_size(t.runtime_sram)} "
                f"outside the arena), {flash} (runtime code {format_size(t.runtime_flash)}), "
                f"{self.plan} memory plan{time}")

    def to_dict(self) -> dict:
        """The budget as saved with a search; the latency keys only with a latency budget, so
        that a search started without one resumes."""
        latency_keys = {"latency_ms": self.latency_ms, "clock_hz": self.clock} if self.latency_ms is not None \
            else {}
        return {"target": self.target.name, "sram": self.target.sram, "flash": self.target.flash,
                "external_flash": self.target.external_flash,
                "runtime_sram": self.target.runtime_sram,
                "runtime_flash": self.target.runtime_flash, "memory_plan": self.plan, **latency_keys}


def budget_rejecting(space: SearchSpace, share: float, samples: int = 2000, seed: int = 7,
                     target: str = CUSTOM) -> tuple[Budget, float]:
    """A fused-plan budget whose SRAM is the `1 - share` quantile of the working arenas of
    `samples` random subnets (plus the runtime share), on `target` (custom: 1 MiB of flash);
    and the share of that sample it rejects (benchmarks and tests of the oracles)."""
    sample = space.sample_many(samples, seed=seed)
    arenas = sorted(footprint(c, "fused").working_arena for c in sample)
    sram = arenas[min(round(len(arenas) * (1 - share)), len(arenas) - 1)] + RUNTIME_SRAM
    budget = Budget(resolve_target(target, str(sram), "1MiB" if target == CUSTOM else None))
    return budget, 1 - sum(budget.check(c).fits for c in sample) / len(sample)


def least_memory_configs(space: SearchSpace) -> list[SubnetConfig]:
    """Per (image, patch) pair, rank ratio and weight width, the subnet with the smallest choice
    elsewhere.

    The arena and the flash grow with the width, depth, heads and MLP ratio, but not always with
    the rank ratio (a low-rank layer adds a tensor and an operator where a dense one has none) nor
    with the weight bits (INT4 halves the flash but stock TFLM unpacks each filter into the
    arena), so every rank ratio and width is kept: when none of these fits, no subnet of the space
    fits.
    """
    depth = min(space.depth)
    return [space.make(image, patch, ratio, min(space.embed_dim), [min(space.num_heads)] * depth,
                       [min(space.mlp_ratio)] * depth, bits)
            for image, patch in space.image_patch_pairs() for ratio in space.rank_ratio
            for bits in space.weight_bits]


def check_space_fits(space: SearchSpace, budget: Budget) -> None:
    """Raise a one-line error, with the numbers, when no subnet of `space` fits `budget`; when the
    latency is what no subnet meets, with the fastest subnet's figure."""
    verdicts = [(budget.check(c), c) for c in least_memory_configs(space)]
    if any(v.fits for v, _ in verdicts):
        return
    fastest, config = min(verdicts, key=lambda vc: vc[0].instructions)
    if budget.latency_reason(fastest.instructions):
        raise McuformerError(f"no subnet of space {space.name!r} runs within --latency "
                             f"{budget.latency_ms:g} ms on {budget.target.name} at {budget.clock / 1e6:g} MHz: "
                             f"the fastest, {config.describe()}, takes "
                             f"{budget.milliseconds(fastest.instructions):,.1f} ms "
                             f"({fastest.instructions / 1e6:,.1f} M instructions, the latency model)")
    verdict, config = min(verdicts, key=lambda vc: (vc[0].sram_used + vc[0].flash_used))
    raise McuformerError(f"no subnet of space {space.name!r} fits {budget.target.name} "
                         f"({budget.plan} plan): even the least, {config.describe()}, needs "
                         f"{verdict.reason}")
