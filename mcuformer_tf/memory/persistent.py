"""The persistent tail of TFLM's arena: exact for the fused model in the host runner, fitted for the unfused one.

Fused persistent tail, exact for the host runner (TFLM tree 90b983c2 on 64-bit x86, our glue;
tests with TFLM_ROOT: arena_used_bytes = plan + tail, to the byte): TFLM allocates from 8 bytes
past a 16-byte boundary (where its own objects leave the tail) one TfLiteEvalTensor (24 B) per
tensor and one NodeAndRegistration (64 B) per operator in two 8-aligned arrays, then the head
builtins' parsed options, each at its own alignment (the MCUF ops have none), then 16-aligned
kernel buffers: each op's OpData (sizeof of the glue's structs: MCUF_PATCH_EMBED 160,
MCUF_ATTENTION 784, MCUF_MLP 800; TFLM's for the head's MEAN, SUB, MUL, ADD, RSQRT,
FULLY_CONNECTED) and, per FULLY_CONNECTED layer inside an MCUF op, the patch embedding and the
head, a multiplier and a shift per output channel; one ScratchBufferHandle (8 B) per scratch
request (with INT4 weights one more: the head's FULLY_CONNECTED unpacks its filter).
`fused_persistent` adds those up from the counts (`counts.fused_graph_counts`; the alignment
simulated); what does not depend on the config (the allocator and planner objects, the
interpreter's input/output TfLiteTensors, the patch embedding's and the MEANs' scratch
handles) is the one measured constant FUSED_PERSISTENT_FIXED, which
`tools/fit_fused_memory.py` prints (a single value over every measured model). Per-channel kernels
are taken to have scales that differ (the converter's; the glue keeps one multiplier for a uniform
tensor); per-tensor kernels, which `mcuformer-tf export` writes (QAT quantises FULLY_CONNECTED
kernels per tensor, as tfmot does), need no channel arrays at all. On a 32-bit target the sizeofs
differ: the firmware's own arena search is the deployed figure.

Unfused persistent tail, fitted on the counts (`counts.graph_counts`): the wheel's TFLM, 64-bit
host, is a newer TFLM than any source tree here, whose sizeofs and allocation order cannot be read
off as above; PERSISTENT_FIT states its error.
"""
from __future__ import annotations

import functools

from mcuformer_tf.memory.counts import FusedCounts, GraphCounts
from mcuformer_tf.memory.net import align
from mcuformer_tf.tflm.arena_plan import ALIGNMENT

# Least-squares fit over the counts of 18 exports measured in the tflite-micro wheel (64-bit
# host): 16 digits subnets (6 fresh-weight, 10 trained-form) and 2 deit-tiny-mcu ones (also
# `flash.STRUCTURE_FIT`'s). Persistent tail per (1, tensor, operator, operand, output channel,
# transposed byte): the per-channel multiplier and shift (8 B a channel) and BATCH_MATMUL's
# transposed right operand (1 B a byte) come out as TFLM allocates them; the rest lumps
# TfLiteEvalTensors, node structures and kernel OpData. Max |error| over the 18: 341 B.
PERSISTENT_FIT = (498.729, 44.933, 196.796, -31.128, 8.057, 0.999)


def unfused_persistent(counts: GraphCounts) -> int:
    """The wheel's persistent tail for the exported model: PERSISTENT_FIT on its counts, and a
    ScratchBufferHandle per INT4 filter TFLM unpacks into scratch (`unpacked`)."""
    features = (1, counts.tensors, counts.operators, counts.operands, counts.channels,
                counts.transposed)
    return align(round(sum(c * f for c, f in zip(PERSISTENT_FIT, features)))
                 + TFLM_HOST_SIZES["scratch_handle"] * counts.unpacked)


# The fused model's persistent tail in the host runner: TFLM tree 90b983c2 built for 64-bit x86
# (TFLM_ROOT), our glue compiled with it. Each entry is a sizeof there (bytes).
TFLM_HOST_SIZES = {
    "eval_tensor": 24,  # TfLiteEvalTensor, one per tensor, one array (8-byte aligned)
    "node": 64,  # NodeAndRegistration, one per operator, one array (8-byte aligned)
    "scratch_handle": 8,  # ScratchBufferHandle, one per scratch request, one array
    "MCUF_ATTENTION": 784,  # the glue's OpData: mcuf_attention_params and three ints
    "MCUF_MLP": 800,  # mcuf_mlp_params and three ints
    "MCUF_PATCH_EMBED": 160,  # mcuf_patch_embed_params and an int
}
# Per builtin of the head: (OpData bytes, parsed builtin options (bytes, alignment)).
TFLM_HOST_BUILTINS = {
    "MEAN": (44, (1, 1)), "SUB": (52, (8, 4)), "MUL": (36, (4, 4)), "ADD": (60, (8, 4)),
    "RSQRT": (28, None), "FULLY_CONNECTED": (64, (16, 4)),
}
_HEAD_OPS = ("MEAN", "SUB", "MUL", "MEAN", "ADD", "RSQRT", "MUL")
_AFFINE_OPS = ("MUL", "ADD")
# What does not depend on the config: TFLM's allocator, planner and builtin-data allocator, the
# interpreter's input and output TfLiteTensors, the scratch handles of the patch embedding and
# the head's MEANs (measured: `python tools/fit_fused_memory.py`).
FUSED_PERSISTENT_FIXED = 552
# Where those objects leave the tail when the model's arrays start: 8 bytes past a 16-byte
# boundary (measured: the patch embedding's OpData, the first 16-aligned kernel buffer, takes 16 B
# more or less with the arrays' size as this phase predicts).
_TAIL_START_PHASE = 8


def _tail_bytes(allocations, start: int = 0) -> int:
    """Bytes TFLM's persistent tail grows by for (size, alignment) allocations made in order
    from `start` bytes past a 16-byte boundary, up to the next 16-byte boundary."""
    tail = -start
    for size, alignment in allocations:
        tail = (tail - size) // alignment * alignment
    return -(tail // ALIGNMENT * ALIGNMENT) - start


@functools.lru_cache(maxsize=None)
def _head_tail(arrays: int, trained: bool) -> int:
    """The tail's first allocations: `arrays` bytes of TfLiteEvalTensors and nodes, then the
    head builtins' parsed options (the MCUF ops have none), then the OpData of the first
    operator, MCUF_PATCH_EMBED, and the head's (the other kernel buffers keep the 16-byte phase).
    Cached by `arrays` modulo 16, what the alignment depends on."""
    head = _HEAD_OPS + _AFFINE_OPS * trained + ("MEAN", "FULLY_CONNECTED")
    parsed = [TFLM_HOST_BUILTINS[op][1] for op in head if TFLM_HOST_BUILTINS[op][1]]
    first_op_data = (TFLM_HOST_SIZES["MCUF_PATCH_EMBED"], ALIGNMENT)
    return (_tail_bytes([(arrays, 8), *parsed, first_op_data], start=_TAIL_START_PHASE) - arrays
            + sum(align(TFLM_HOST_BUILTINS[op][0]) for op in head))


def fused_persistent(counts: FusedCounts, fixed: int = FUSED_PERSISTENT_FIXED) -> int:
    """TFLM's persistent tail for the compiled model in the host runner (module docstring)."""
    sizes = TFLM_HOST_SIZES
    arrays = sizes["eval_tensor"] * counts.tensors + sizes["node"] * counts.operators
    blocks = counts.blocks * (2 * sizes["scratch_handle"] + align(sizes["MCUF_ATTENTION"])
                              + align(sizes["MCUF_MLP"]))
    head_channels = 2 * align(4 * counts.classes)  # FULLY_CONNECTED's multipliers and shifts
    unpacking = sizes["scratch_handle"] * counts.unpacked  # the head's INT4 filter's scratch request
    return (fixed + arrays + _head_tail(arrays % ALIGNMENT, counts.trained) + blocks
            + counts.channel_arrays + head_channels + unpacking)
