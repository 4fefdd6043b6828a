"""Arena and flash of a ViT from its `SubnetConfig` alone: no conversion, no TFLM, no TensorFlow.

`memory_of(config, form)` is the entry point (the tuner's budget check, thousands of configs a
second): a `Footprint` of the unfused (exported) and of the fused (compiled) model in the
`ExportForm` `form` (`form.QAT`, what `mcuformer-tf export` writes, by default). It puts
together:

- exact, to the byte (tests: real exports of both presets, TFLM's head in the wheel, the
  compiler's plan): both non-persistent arenas (`unfused_plan`, `fused_plan`, on the graph
  rebuilt in `net`), the graphs' counts (`counts`, with the MCUF options' lengths from
  `mcuf_options`) and the fused model's persistent tail in the host runner (`persistent`);
- fitted on those counts: the unfused persistent tail (`persistent.PERSISTENT_FIT`) and the
  flash of both models (`flash`), within the bounds those modules state.

Planning bytes (`Footprint.planning`; on the exports measured the working arena is exact for
unfused models and 8 bytes over for fused ones, tests: test_arena_search): while TFLM plans it
takes from the free arena the scratch requests' head, one AllocationInfo per tensor and scratch
buffer and the greedy planner's 40 bytes per planned buffer; for small graphs of many tensors
that is more than the plan it makes, so a model runs only with `Footprint.working_arena`, which
the tuner budgets.

Speed: the plans, counts and option lengths are cached per block (and per segment or distinct
scratch set, see their modules), so the per-config work is a few dictionary look-ups per block.
The caches grow with the distinct blocks of a search space (thousands of entries at most).
"""
from __future__ import annotations

from dataclasses import dataclass

from mcuformer_tf.memory.counts import fused_graph_counts, graph_counts
from mcuformer_tf.memory.flash import QAT_NAMES_FIT, fused_flash, qat_names, unfused_flash
from mcuformer_tf.memory.form import QAT, ExportForm
from mcuformer_tf.memory.fused_plan import fused_non_persistent, fused_planned
from mcuformer_tf.memory.net import check_config
from mcuformer_tf.memory.persistent import fused_persistent, unfused_persistent
from mcuformer_tf.memory.unfused_plan import unfused_non_persistent, unfused_planned
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.tflm.arena_plan import PERSISTENT_AFTER_PLANNING, planning_bytes


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model in TFLM: arena = persistent + non_persistent (what TFLM reports using);
    flash = the .tflite. `planning`: the free arena TFLM's allocator needs beside the persistent
    tail while it plans (see `planning_bytes`), so the arena a model runs with is
    `working_arena`: above `arena` where planning needs more than the plan it makes."""

    non_persistent: int
    persistent: int | None
    flash: int | None
    planning: int = 0

    @property
    def arena(self) -> int | None:
        return None if self.persistent is None else self.persistent + self.non_persistent

    @property
    def working_arena(self) -> int | None:
        if self.persistent is None:
            return None
        return max(self.arena, self.persistent - PERSISTENT_AFTER_PLANNING + self.planning)


@dataclass(frozen=True)
class MemoryEstimate:
    unfused: Footprint
    fused: Footprint


def memory_of(config: SubnetConfig, form: ExportForm = QAT) -> MemoryEstimate:
    """Arena and flash of the unfused (exported) and the fused (compiled) model of `config`.

    Exact: both non-persistent arenas (TFLM's head; the compiler's plan) and the fused model's
    persistent tail in the host runner (64-bit TFLM 90b983c2 with our glue). Fitted (see
    PERSISTENT_FIT, STRUCTURE_FIT, FUSED_STRUCTURE_FIT): the unfused persistent tail (the
    wheel's) and both flash sizes. `form` (see `memory.form`): `QAT` (the default) is what
    `mcuformer-tf export` writes: FULLY_CONNECTED kernels per tensor (tfmot's scheme; the patch
    embedding per channel) and every LayerNorm's gamma MUL and beta ADD kept; `FLOAT` the
    converter's form of a float model: every kernel per output channel, gamma and beta folded
    into a dense FULLY_CONNECTED after the LayerNorm; `FRESH_FLOAT` that of fresh weights
    (LayerNorm gamma/beta and FC biases dropped). The fits were made on the float forms and hold
    for QAT through the counts (tests: QAT exports). The weight bits are the config's
    (`SubnetConfig.weight_bits`; those of `form` are not read): with 4, the weights are counted
    packed in both files, the unfused arena gains stock TFLM's unpacking scratch and the fused
    one that of the head's builtin FULLY_CONNECTED (the MCUF kernels read INT4 in place).
    """
    check_config(config)
    form = form._replace(weight_bits=config.weight_bits)
    counts = graph_counts(config, form)
    fused = fused_graph_counts(config, form)
    names = {model: qat_names(model, fused) if form.qat else 0 for model in QAT_NAMES_FIT}
    unfused = Footprint(unfused_non_persistent(config, form), unfused_persistent(counts),
                        unfused_flash(counts) + names["unfused"],
                        planning_bytes(counts.tensors, *unfused_planned(config, form)))
    return MemoryEstimate(unfused, Footprint(
        fused_non_persistent(config, form), fused_persistent(fused),
        fused_flash(fused) + names["fused"],
        planning_bytes(fused.tensors, *fused_planned(config, form))))
