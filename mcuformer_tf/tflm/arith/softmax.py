"""SOFTMAX int8 -> int8 over the last axis, as stock TFLM.

Prepare: tensorflow/lite/micro/kernels/softmax_common.cc (CalculateSoftmaxParams:
output zero point -128 and scale 1/256 required, PreprocessSoftmaxScaling with
5 integer bits, diff_min from CalculateInputRadius). Eval:
tensorflow/lite/kernels/internal/reference/softmax.h (the int8 Softmax):
exp of (x - row max) in gemmlowp fixed point, sum in Q12.19, reciprocal,
RoundingDivideByPOT to 8 bits, - 128.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import fixedpoint
from mcuformer_tf.tflm.arith.common import INT8_MAX, INT8_MIN, require_int8, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import (
    calculate_input_radius,
    multiply_by_quantized_multiplier_greater_than_one,
    preprocess_softmax_scaling,
    rescale,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap32,
)

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


@dataclass(frozen=True)
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def prepare_softmax(graph, op) -> SoftmaxParams:
    input_tensor, output_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, output_tensor)
    if zero_point(output_tensor) != -128 or scale(output_tensor) != np.float32(1 / 256):
        raise McuformerError(f"{op.opcode}: TFLM requires an int8 output of scale 1/256 and zero point -128")
    multiplier, left_shift = preprocess_softmax_scaling(float(np.float32(op.options["beta"])),
                                                        float(scale(input_tensor)), SCALED_DIFF_INTEGER_BITS)
    return SoftmaxParams(multiplier, left_shift,
                         -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, left_shift))


def softmax(params: SoftmaxParams, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    values = x.astype(np.int64)
    diff = values - values.max(axis=-1, keepdims=True)
    used = diff >= params.diff_min
    rescaled = multiply_by_quantized_multiplier_greater_than_one(diff, params.input_multiplier,
                                                                  params.input_left_shift)
    exps = fixedpoint.exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)
    terms = np.where(used, rescale(exps, 0, ACCUMULATION_INTEGER_BITS), 0)
    sum_of_exps = wrap32(terms.sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = fixedpoint.get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    scaled = saturating_rounding_doubling_high_mul(shifted_scale, exps)
    out = rounding_divide_by_pot(scaled, exponent) + INT8_MIN
    return np.where(used, np.clip(out, INT8_MIN, INT8_MAX), INT8_MIN).astype(np.int8)
