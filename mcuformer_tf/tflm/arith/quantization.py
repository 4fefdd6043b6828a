"""TFLM's quantised-multiplier arithmetic, bit for bit, vectorised over numpy int64.

Modelled on tensorflow/lite/kernels/internal/quantization_util.cc
(QuantizeMultiplier, PreprocessSoftmaxScaling, CalculateInputRadius),
tensorflow/lite/kernels/internal/common.{h,cc} (the double-rounding
MultiplyByQuantizedMultiplier family: the wheel is built without
TFLITE_SINGLE_ROUNDING) and gemmlowp's fixedpoint.h scalar int32 primitives
(SaturatingRoundingDoublingHighMul, RoundingDivideByPOT, saturating shifts).

Values are carried as int64 holding int32s (multiply_by_quantized_multiplier
returns int32); `wrap32` reproduces C's two's-complement int32 overflow where
TFLM lets an int32 expression wrap.
Multipliers and shifts may be Python ints or arrays that broadcast against x
(per-channel parameters).
"""
from __future__ import annotations

import math

import numpy as np

from mcuformer_tf.errors import McuformerError

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap32(x) -> np.ndarray:
    """x reduced to int32 the way a two's-complement int32 overflow wraps (int64 result)."""
    x = np.asarray(x, np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def tflite_round(value: float) -> int:
    """std::round on a double: to nearest, halves away from zero, exactly."""
    floor = math.floor(abs(value))
    rounded = floor + 1 if abs(value) - floor >= 0.5 else floor
    return int(math.copysign(rounded, value))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) with real ≈ multiplier · 2^(shift - 31); TFLM's QuantizeMultiplier.

    shift > 0 is a left shift. Multipliers below 2^-31 flush to (0, 0).
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q_fixed = tflite_round(fraction * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: a multiplier in (0, 1), shift ≤ 0."""
    if not 0.0 < real < 1.0:
        raise McuformerError(f"a multiplier in (0, 1) was expected, got {real!r} (TFLM Prepare fails)")
    return quantize_multiplier(real)


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    """QuantizeMultiplierGreaterThanOne: a multiplier above 1, shift ≥ 0."""
    if not real > 1.0:
        raise McuformerError(f"a multiplier above 1 was expected, got {real!r} (TFLM Prepare fails)")
    return quantize_multiplier(real)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (ARM VQRDMULH)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    high = np.sign(total) * (np.abs(total) >> 31)  # C division truncates toward zero
    return np.where((a == b) & (a == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_left_shift(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for exponent ≥ 0 on int32 values."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def rescale(x, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<int32, src>)."""
    exponent = src_integer_bits - dst_integer_bits
    if exponent >= 0:
        return saturating_left_shift(x, exponent)
    return rounding_divide_by_pot(x, -exponent)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLM's MultiplyByQuantizedMultiplier(int32 x, ...), double rounding, as an int32 array.

    x holds int32 values (any integer dtype); multiplier and shift may be per-element arrays.
    """
    shift = np.asarray(shift, np.int64)
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    shifted = wrap32(np.asarray(x, np.int64) * wrap32(np.int64(1) << left_shift))
    result = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift)
    return result.astype(np.int32)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplierSmallerThanOneExp (left_shift ≤ 0)."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier),
                                  -np.asarray(left_shift, np.int64))


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplierGreaterThanOne (left_shift ≥ 0)."""
    shifted = wrap32(np.asarray(x, np.int64) * (np.int64(1) << np.asarray(left_shift, np.int64)))
    return saturating_rounding_doubling_high_mul(shifted, multiplier)


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int) -> tuple[int, int]:
    """PreprocessSoftmaxScaling: (multiplier, left_shift) of beta · input_scale in Q(bits).(31-bits)."""
    real = min(beta * input_scale * (1 << (31 - input_integer_bits)), float((1 << 31) - 1))
    return quantize_multiplier_greater_than_one(real)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius: the largest input magnitude whose rescaled value does not saturate."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1)
                          * (1 << (total_signed_bits - input_integer_bits)) / (1 << input_left_shift))
    return math.floor(max_input_rescaled)


def count_leading_zeros(x) -> np.ndarray:
    """CountLeadingZeros of x read as uint32 (32 for 0)."""
    x = np.asarray(x, np.int64) & 0xFFFFFFFF
    bits = np.zeros(x.shape, np.int64)
    for step in (16, 8, 4, 2, 1):
        big = x >= (np.int64(1) << step)
        bits = bits + np.where(big, step, 0)
        x = np.where(big, x >> step, x)
    return 32 - (bits + (x > 0))
