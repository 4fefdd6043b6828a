"""MEAN on int8 over any axes, as stock TFLM.

Prepare: tensorflow/lite/micro/kernels/reduce_common.cc (PrepareMeanOrSumHelper:
QuantizeMultiplier of s_in / s_out). Eval: tensorflow/lite/kernels/internal/
reference/reduce.h (QuantizedMeanOrSum): an int32 sum of the raw values, minus
zp_in · n, times the multiplier with 1/n folded in as
(multiplier << k) / n, shift - k, k = min(floor(log2 n), 32, 31 + shift).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuformer_tf.tflm.arith.common import INT8_MAX, INT8_MIN, require_int8, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier, quantize_multiplier, wrap32


@dataclass(frozen=True)
class MeanParams:
    axes: tuple  # resolved, non-negative, without duplicates
    input_zero_point: int
    output_zero_point: int
    multiplier: int  # before 1/n is folded in, as Prepare stores it
    shift: int
    output_shape: tuple


def prepare_mean(graph, op) -> MeanParams:
    input_tensor, axis_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1])
    output_tensor = graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, output_tensor)
    rank = len(input_tensor.shape)
    axes = tuple(dict.fromkeys(int(a) % rank for a in np.ravel(axis_tensor.data)))
    multiplier, shift = quantize_multiplier(float(scale(input_tensor)) / float(scale(output_tensor)))
    return MeanParams(axes, zero_point(input_tensor), zero_point(output_tensor), multiplier, shift,
                      tuple(output_tensor.shape))


def mean_multiplier(params: MeanParams, count: int) -> tuple[int, int]:
    """The (multiplier, shift) QuantizedMeanOrSum uses for a mean over `count` elements."""
    fold = min(count.bit_length() - 1, 32, 31 + params.shift)
    return (params.multiplier << fold) // count, params.shift - fold


def mean(params: MeanParams, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    count = int(np.prod([x.shape[a] for a in params.axes], dtype=np.int64))
    total = wrap32(x.astype(np.int64).sum(axis=params.axes))
    shifted_sum = wrap32(total - params.input_zero_point * count)
    multiplier, shift = mean_multiplier(params, count)
    out = multiply_by_quantized_multiplier(shifted_sum, multiplier, shift) + params.output_zero_point
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8).reshape(params.output_shape)
