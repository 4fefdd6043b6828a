"""ADD, SUB, MUL, SQUARED_DIFFERENCE (broadcasting) and RSQRT on int8, as stock TFLM.

- ADD: tensorflow/lite/micro/kernels/add_common.cc (CalculateOpDataAdd, in
  double) and reference/integer_ops/add.h (AddFunc): both inputs shifted left
  by 20, rescaled to twice the larger input scale, summed, rescaled out.
- SUB: tensorflow/lite/micro/kernels/sub_common.cc (CalculateOpDataSub) and
  reference/sub.h: ADD's arithmetic with the rescaled inputs subtracted. Its
  real multipliers are computed in double, exactly as ADD's: so the wheel's
  machine code has it (cvtss2sd, addsd, divsd), as PR #1501 wrote it, although
  sub_common.cc at tflite-micro HEAD (2026-08, after the revert #1536) divides
  in C float. Float multipliers are off by up to ~2^-24 relative, which shows
  as 1 LSB in the rare element that lies that close to a rounding tie.
- MUL: tensorflow/lite/micro/kernels/mul_common.cc and
  reference/integer_ops/mul.h: (x1 - zp1)(x2 - zp2) times one multiplier.
- SQUARED_DIFFERENCE: tensorflow/lite/micro/kernels/squared_difference.cc
  (left shift 7, squared raw difference, QuantizeMultiplier output scale).
- RSQRT: tensorflow/lite/micro/kernels/elementwise.cc (RsqrtEvalQuantized with
  common.h GetInvSqrtQuantizedMultiplierExp, shifted by 20 and back). The
  output multiplier 1 / (sqrt(s_in) · s_out) is computed in double (sqrtsd,
  mulsd, divsd in the wheel), not in float as SetRsqrtOutputMultiplier reads.
Broadcasting follows numpy's rules, as TFLM's BroadcastBinaryOpSimple does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import fixedpoint
from mcuformer_tf.tflm.arith.common import INT8_MAX, INT8_MIN, activation_range, require_int8, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_smaller_than_one_exp,
    quantize_multiplier,
    quantize_multiplier_smaller_than_one_exp,
    wrap32,
)

ADD_SUB_LEFT_SHIFT = 20
SQUARED_DIFFERENCE_LEFT_SHIFT = 7
RSQRT_SHIFT = 20


@dataclass(frozen=True)
class AddSubParams:
    """ArithmeticParams of ADD, SUB and SQUARED_DIFFERENCE."""

    left_shift: int
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    activation_min: int
    activation_max: int
    output_shape: tuple


@dataclass(frozen=True)
class MulParams:
    input1_offset: int
    input2_offset: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    activation_min: int
    activation_max: int
    output_shape: tuple


@dataclass(frozen=True)
class RsqrtParams:
    input_offset: int  # the input zero point itself (OpDataAbsRsqrt's naming), not its negation
    output_offset: int
    multiplier: int
    shift: int


def _binary_tensors(graph, op):
    tensors = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    require_int8(op.opcode, *tensors)
    return tensors


def _add_sub_params(input1, input2, output, multipliers, left_shift, activation) -> AddSubParams:
    (m1, s1), (m2, s2), (mo, so) = multipliers
    low, high = activation
    return AddSubParams(left_shift, -zero_point(input1), m1, s1, -zero_point(input2), m2, s2,
                        zero_point(output), mo, so, low, high, tuple(output.shape))


def _prepare_add_or_sub(graph, op) -> AddSubParams:
    """CalculateOpDataAdd and (as the wheel is built) CalculateOpDataSub: real multipliers in double.

    twice_max_input_scale = 2 · double(max of the two float scales); input i's multiplier
    double(s_i) / twice; the output's twice / (2^20 · double(s_out)).
    """
    input1, input2, output = _binary_tensors(graph, op)
    twice_max_input_scale = 2 * float(max(scale(input1), scale(input2)))
    real_output = twice_max_input_scale / ((1 << ADD_SUB_LEFT_SHIFT) * float(scale(output)))
    multipliers = (quantize_multiplier_smaller_than_one_exp(float(scale(input1)) / twice_max_input_scale),
                   quantize_multiplier_smaller_than_one_exp(float(scale(input2)) / twice_max_input_scale),
                   quantize_multiplier_smaller_than_one_exp(real_output))
    return _add_sub_params(input1, input2, output, multipliers, ADD_SUB_LEFT_SHIFT,
                           activation_range(op.options["fused_activation_function"], output))


def prepare_add(graph, op) -> AddSubParams:
    return _prepare_add_or_sub(graph, op)


def prepare_sub(graph, op) -> AddSubParams:
    return _prepare_add_or_sub(graph, op)


def prepare_squared_difference(graph, op) -> AddSubParams:
    input1, input2, output = _binary_tensors(graph, op)
    twice_max_input_scale = 2.0 * float(max(scale(input1), scale(input2)))
    output_denominator = float(np.float32(1 << (2 * SQUARED_DIFFERENCE_LEFT_SHIFT)) * scale(output))
    multipliers = (quantize_multiplier_smaller_than_one_exp(float(scale(input1)) / twice_max_input_scale),
                   quantize_multiplier_smaller_than_one_exp(float(scale(input2)) / twice_max_input_scale),
                   quantize_multiplier(twice_max_input_scale * twice_max_input_scale / output_denominator))
    return _add_sub_params(input1, input2, output, multipliers, SQUARED_DIFFERENCE_LEFT_SHIFT,
                           (INT8_MIN, INT8_MAX))


def _scaled_inputs(params: AddSubParams, x1, x2):
    shifted1 = wrap32((np.asarray(x1, np.int64) + params.input1_offset) << params.left_shift)
    shifted2 = wrap32((np.asarray(x2, np.int64) + params.input2_offset) << params.left_shift)
    return (multiply_by_quantized_multiplier_smaller_than_one_exp(shifted1, params.input1_multiplier,
                                                                   params.input1_shift),
            multiply_by_quantized_multiplier_smaller_than_one_exp(shifted2, params.input2_multiplier,
                                                                   params.input2_shift))


def _finish(params, raw_output) -> np.ndarray:
    out = np.clip(raw_output + params.output_offset, params.activation_min, params.activation_max)
    return out.astype(np.int8).reshape(params.output_shape)


def add(params: AddSubParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    scaled1, scaled2 = _scaled_inputs(params, x1, x2)
    return _finish(params, multiply_by_quantized_multiplier_smaller_than_one_exp(
        wrap32(scaled1 + scaled2), params.output_multiplier, params.output_shift))


def sub(params: AddSubParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    scaled1, scaled2 = _scaled_inputs(params, x1, x2)
    return _finish(params, multiply_by_quantized_multiplier_smaller_than_one_exp(
        wrap32(scaled1 - scaled2), params.output_multiplier, params.output_shift))


def squared_difference(params: AddSubParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    scaled1, scaled2 = _scaled_inputs(params, x1, x2)
    difference = wrap32(scaled1 - scaled2)
    return _finish(params, multiply_by_quantized_multiplier(
        wrap32(difference * difference), params.output_multiplier, params.output_shift))


def prepare_mul(graph, op) -> MulParams:
    input1, input2, output = _binary_tensors(graph, op)
    low, high = activation_range(op.options["fused_activation_function"], output)
    multiplier, shift = quantize_multiplier(float(scale(input1)) * float(scale(input2)) / float(scale(output)))
    return MulParams(-zero_point(input1), -zero_point(input2), zero_point(output), multiplier, shift,
                     low, high, tuple(output.shape))


def mul(params: MulParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    product = wrap32((np.asarray(x1, np.int64) + params.input1_offset)
                     * (np.asarray(x2, np.int64) + params.input2_offset))
    return _finish(params, multiply_by_quantized_multiplier(product, params.output_multiplier,
                                                            params.output_shift))


def prepare_rsqrt(graph, op) -> RsqrtParams:
    input_tensor, output_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, output_tensor)
    denominator = math.sqrt(float(scale(input_tensor))) * float(scale(output_tensor))  # double, not float
    multiplier, shift = quantize_multiplier(1.0 / denominator)
    return RsqrtParams(zero_point(input_tensor), zero_point(output_tensor), multiplier, shift)


def rsqrt(params: RsqrtParams, x: np.ndarray) -> np.ndarray:
    value = np.asarray(x, np.int64) - params.input_offset
    if np.any(value < 0):
        raise McuformerError("RSQRT: a negative input; TFLM fails with "
                             "'Rsqrt is only defined for positive values'")
    inv_sqrt_multiplier, inv_sqrt_shift = fixedpoint.inv_sqrt_quantized_multiplier_exp(value, -1)
    data = multiply_by_quantized_multiplier(np.ones_like(value), inv_sqrt_multiplier,
                                            inv_sqrt_shift + RSQRT_SHIFT)
    out = multiply_by_quantized_multiplier(data, params.multiplier, params.shift - RSQRT_SHIFT)
    out = np.clip(out + params.output_offset, INT8_MIN, INT8_MAX)
    return np.where(value == 0, INT8_MAX, out).astype(np.int8)
