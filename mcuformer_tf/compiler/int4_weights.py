"""Packing 4-bit weights into TFLM's INT4 tensors: half the flash per weight.

A model whose linear layers (FULLY_CONNECTED) and patch embedding (CONV_2D)
hold int8 filters on a 4-bit grid (symmetric, narrow range: values in
[-7, 7], zero point 0) computes exactly the same integers when each filter is
stored as a packed INT4 tensor (`tflm.int4`): stock TFLM unpacks INT4 filters
back into those int8 values before it computes. `pack_int4_weights` does that
rewrite for every such filter, and leaves filters the converter already wrote
as INT4. A filter off the grid, or a per-channel FULLY_CONNECTED filter (TFLM's
Prepare refuses per-channel INT4 there), is refused by name: it cannot be
stored in 4 bits without changing the model's results.
"""
from __future__ import annotations

import numpy as np

from mcuformer_tf.compiler import ir
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.int4 import INT4_MAX, pack_int4
from mcuformer_tf.tflm.tflite_graph import Quantization

FILTER_OPS = ("FULLY_CONNECTED", "CONV_2D")
FILTER = 1  # the filter's input position
GRID_MAX = INT4_MAX  # symmetric narrow range: [-7, 7]


def _refusal(op: ir.Op, weights: ir.Tensor) -> str | None:
    """Why `weights` cannot be stored as INT4 without changing what `op` computes, or None."""
    q = weights.quantization
    if weights.dtype != np.int8 or q is None:
        return f"{weights.dtype} weights without int8 quantisation"
    if np.any(np.asarray(q.zero_point) != 0):
        return "a zero point other than 0"
    if op.opcode == "FULLY_CONNECTED" and q.per_channel:
        return "per-channel scales (TFLM's FULLY_CONNECTED takes INT4 weights per tensor only)"
    largest = int(np.max(np.abs(weights.data.astype(np.int16)), initial=0))
    if largest > GRID_MAX:
        return f"values up to ±{largest}, off the 4-bit grid [-{GRID_MAX}, {GRID_MAX}]"
    return None


def int4_filters(model: ir.Model) -> list:
    """The constant filters of the model's FULLY_CONNECTED and CONV_2D operators, in graph order,
    each once, with the first operator reading it: [(op, tensor)]."""
    seen = {}
    for op in model.operators:
        weights = op.inputs[FILTER] if op.opcode in FILTER_OPS and len(op.inputs) > FILTER else None
        if weights is not None and weights.is_constant and weights not in seen:
            seen[weights] = op
    return [(op, weights) for weights, op in seen.items()]


def pack_int4_weights(model: ir.Model) -> int:
    """Store every linear and patch-embedding filter of `model` as packed INT4, in place; returns
    how many filters it packed. McuformerError names the first filter that is not 4-bit."""
    filters = int4_filters(model)
    for op, weights in filters:
        reason = None if weights.int4 else _refusal(op, weights)
        if reason:
            raise McuformerError(f"{op.opcode} filter '{weights.name}' cannot be packed into INT4: {reason}")
    packed = {}  # old buffer -> its packed twin, so filters sharing a buffer still share one
    unpacked = [weights for _, weights in filters if not weights.int4]
    for weights in unpacked:
        if weights.buffer not in packed:
            packed[weights.buffer] = ir.Buffer(pack_int4(weights.data))
        weights.buffer, weights.int4 = packed[weights.buffer], True
    return len(unpacked)


def pack_int4_model(model_bytes: bytes) -> bytes:
    """`pack_int4_weights` on a .tflite's bytes."""
    model = ir.read(model_bytes)
    pack_int4_weights(model)
    return ir.write(model)


def onto_int4_grid(model_bytes: bytes) -> bytes:
    """The int8 model with every FULLY_CONNECTED and CONV_2D filter requantised onto the 4-bit grid
    (values in [-7, 7]; linear layers per tensor, as TFLM takes INT4 there, the patch embedding per
    channel) and each bias onto its new input × filter scale; still int8 tensors, which
    `pack_int4_model` then packs. For tests and benchmarks of INT4 models of any subnet (a 4-bit
    export comes from `export --weight-bits 4`)."""
    model = ir.read(model_bytes)
    for op, weights in int4_filters(model):
        channels = weights.shape[0]
        real = weights.data.reshape(channels, -1) * np.resize(weights.quantization.scale, (channels, 1))
        largest = np.abs(real).max(axis=1, keepdims=True)
        if op.opcode == "FULLY_CONNECTED":
            largest = np.full_like(largest, largest.max())
        scale = np.where(largest > 0, largest / GRID_MAX, 1.0).astype(np.float32)
        grid = np.clip(np.round(real / scale), -GRID_MAX, GRID_MAX).astype(np.int8).reshape(weights.shape)
        kept = 1 if op.opcode == "FULLY_CONNECTED" else channels
        weights.quantization = Quantization(scale[:kept, 0], np.zeros(kept, np.int64), 0)
        weights.buffer = ir.Buffer(grid.tobytes())
        bias = op.inputs[2] if len(op.inputs) > 2 else None
        if bias is not None:
            bias_scale = (np.float32(op.inputs[0].quantization.scale[0]) * scale[:kept, 0]).astype(np.float32)
            bias_real = bias.data * np.resize(bias.quantization.scale, channels)
            values = np.round(bias_real / np.resize(bias_scale, channels)).astype(np.int32)
            bias.quantization = Quantization(bias_scale, np.zeros(kept, np.int64), 0)
            bias.buffer = ir.Buffer(values.tobytes())
    return ir.write(model)
