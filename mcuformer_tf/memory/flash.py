"""Flash of both models: the .tflite's size, its constants counted exactly and its structure fitted.

The files hold their constants (weights, biases, position table, shapes and axes) and 12 B per
quantisation channel exactly as `counts` counts them; the compiled file also its MCUF options and
offline plan. The rest (flatbuffer tables, alignment, and the tensor names the converter chose,
which depend on each layer's form) is fitted: STRUCTURE_FIT for the exported model,
FUSED_STRUCTURE_FIT per block part for the compiled one (within 118 B of every compiled export it
was fitted on), both on the float forms and holding for `QAT` through the counts, and
QAT_NAMES_FIT, fitted on QAT exports, for the QAT export's longer names (tests: QAT exports).
"""
from __future__ import annotations

from mcuformer_tf.memory.counts import FusedCounts, GraphCounts
from mcuformer_tf.tflm.arena_plan import ALIGNMENT

# Least-squares fit over the counts of the 18 wheel exports `persistent.PERSISTENT_FIT` was fitted
# on. Flatbuffer structure beyond the constants and 12 B per quantisation channel (4 B scale, 8 B
# zero point) per (1, tensor, operator, operand): tables, tensor names, alignment. Max |error| of
# the whole file over the 18: 705 B.
STRUCTURE_FIT = (-1346.29, 209.14, -294.807, 81.741)
QUANTIZATION_BYTES = 12


def unfused_flash(counts: GraphCounts) -> int:
    """The exported .tflite's size (float-form names; `qat_names` adds QAT's): its constants,
    12 B per quantisation channel and STRUCTURE_FIT."""
    features = (1, counts.tensors, counts.operators, counts.operands)
    structure = round(sum(c * f for c, f in zip(STRUCTURE_FIT, features)))
    return (counts.weights + counts.biases + counts.other_constants
            + QUANTIZATION_BYTES * counts.quantized + structure)


def fused_counted_bytes(counts: FusedCounts) -> int:
    """The compiled file's bytes the counts give exactly: constants, 12 B per quantisation
    channel, the MCUF ops' options, the offline plan (three int32 then one per tensor), the
    padding of those buffers."""
    return (counts.data + counts.padding + QUANTIZATION_BYTES * counts.quantized
            + counts.options + 4 * (3 + counts.tensors))


def fused_flash_features(counts: FusedCounts) -> tuple:
    """What the structure fit multiplies: per block part, its count (the trained form apart,
    whose biases and folded LayerNorms bring tensors with long converter names), and the
    blocks past the tenth (two-digit indices in their tensors' names)."""
    parts = (1, counts.blocks, counts.low_rank_qkv, counts.low_rank_proj, counts.low_rank_mlp)
    return (*parts, counts.multi_head, *(counts.trained * part for part in parts),
            max(0, counts.blocks - 10))


# Least-squares fit of the rest of the compiled file (tables, tensor names, alignment) on
# `fused_flash_features`, over 108 compiled exports: 50 digits configs in the fresh-weight form,
# 50 in the trained form, 8 deit-tiny-mcu ones (`python tools/fit_fused_memory.py`). Max |error|
# of the whole file over them: 118 B.
FUSED_STRUCTURE_FIT = (3323.308, 918.634, 132.134, 126.729, 291.16, 3.986, 720.672, 772.642,
                       225.968, 18.043, 380.125, 9.023)


def fused_flash(counts: FusedCounts) -> int:
    """The compiled .tflite's size: the counted bytes and the structure fit, rounded to the 16
    bytes the writer pads the file to (its constants are 16-byte aligned)."""
    structure = sum(c * f for c, f in zip(FUSED_STRUCTURE_FIT, fused_flash_features(counts)))
    return ALIGNMENT * round((fused_counted_bytes(counts) + structure) / ALIGNMENT)


# The QAT export's tensor names (subnet/quant_block<i>_<layer>/...) are longer than the float
# form's the structure fits were made on: the flash of each model gains a fitted amount per
# `qat_names_features` (least squares over 28 QAT exports, `python tools/fit_qat_names.py`: 12
# digits, 8 deit-tiny-mcu, 8 deit-tiny-mcu-int4, rank ratios spread over each preset's; max |error|
# unfused 375 B (digits), fused 571 B (deit-tiny-mcu-int4); tests/test_memory_model.py checks
# other configs).
QAT_NAMES_FIT = {"unfused": (607.1, 214.0, -3.0, 34.1, 390.1, 109.8, 179.5),
                 "fused": (458.0, 1095.0, -154.8, 73.2, -156.4, -3.7, 120.5)}


def qat_names_features(fused: FusedCounts) -> tuple:
    """What QAT_NAMES_FIT multiplies: 1, the blocks, the low-rank pairs of each kind (each layer
    of a pair brings its own named tensors), the blocks with more than one head (their per-head
    slices), the blocks past the tenth (two-digit indices in their names)."""
    return (1, fused.blocks, fused.low_rank_qkv, fused.low_rank_proj, fused.low_rank_mlp, fused.multi_head,
            max(0, fused.blocks - 10))


def qat_names(model: str, fused: FusedCounts) -> int:
    """Bytes the QAT export's longer tensor names add to the `unfused` or `fused` model's file."""
    return round(sum(c * f for c, f in zip(QAT_NAMES_FIT[model], qat_names_features(fused))))
