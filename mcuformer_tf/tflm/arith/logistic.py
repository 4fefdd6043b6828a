"""LOGISTIC int8 -> int8, as stock TFLM.

Prepare: tensorflow/lite/micro/kernels/logistic_common.cc
(CalculateArithmeticOpDataLogistic: output zero point -128 required; the input
multiplier comes from std::frexp of scale · 2^27 directly, not from
QuantizeMultiplier; input radius from CalculateInputRadius with 4 integer
bits). Eval: tensorflow/lite/kernels/internal/reference/integer_ops/logistic.h:
saturate outside the radius, else gemmlowp logistic in Q4.27 -> Q0.31,
RoundingDivideByPOT by 23, - 128.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import fixedpoint
from mcuformer_tf.tflm.arith.common import INT8_MAX, INT8_MIN, require_int8, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import (
    calculate_input_radius,
    multiply_by_quantized_multiplier,
    rounding_divide_by_pot,
    tflite_round,
    wrap32,
)

INPUT_INTEGER_BITS = 4
OUTPUT_INTEGER_BITS = 8


@dataclass(frozen=True)
class LogisticParams:
    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int


def prepare_logistic(graph, op) -> LogisticParams:
    input_tensor, output_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, output_tensor)
    if zero_point(output_tensor) != -128:
        raise McuformerError(f"{op.opcode}: TFLM requires an int8 output zero point of -128")
    fraction, left_shift = math.frexp(float(scale(input_tensor)) * float(1 << (31 - INPUT_INTEGER_BITS)))
    multiplier = int(wrap32(tflite_round(fraction * (1 << 31))))  # C's int32 cast of 2^31 wraps
    return LogisticParams(zero_point(input_tensor),
                          calculate_input_radius(INPUT_INTEGER_BITS, left_shift, 31), multiplier, left_shift)


def logistic(params: LogisticParams, x: np.ndarray) -> np.ndarray:
    centred = np.asarray(x, np.int64) - params.input_zero_point
    in_q4 = multiply_by_quantized_multiplier(centred, params.input_multiplier, params.input_left_shift)
    out_q0 = fixedpoint.logistic(in_q4, INPUT_INTEGER_BITS)
    out = np.clip(rounding_divide_by_pot(out_q0, 31 - OUTPUT_INTEGER_BITS) + INT8_MIN, INT8_MIN, INT8_MAX)
    out = np.where(centred >= params.input_range_radius, INT8_MAX, out)
    return np.where(centred <= -params.input_range_radius, INT8_MIN, out).astype(np.int8)  # tested first
