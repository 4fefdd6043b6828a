"""gemmlowp's int32 fixed-point transcendental functions, as TFLM's int8 kernels call them.

A FixedPoint<int32, k> value is carried as its raw int32 in an int64 array;
`k` (integer bits) is passed explicitly. Modelled on gemmlowp
fixedpoint/fixedpoint.h (exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1,
logistic) and tensorflow/lite/kernels/internal/common.h (GetReciprocal,
GetInvSqrtQuantizedMultiplierExp). Plain FixedPoint + and - wrap as int32.
"""
from __future__ import annotations

import numpy as np

from mcuformer_tf.tflm.arith.quantization import (
    INT32_MAX,
    count_leading_zeros,
    rescale,
    rounding_divide_by_pot,
    saturating_left_shift,
    wrap32,
)
from mcuformer_tf.tflm.arith.quantization import saturating_rounding_doubling_high_mul as mul

ONE_Q0 = INT32_MAX  # FixedPoint<int32, 0>::One()


def one(integer_bits: int) -> int:
    """FixedPoint<int32, integer_bits>::One() for integer_bits ≥ 1 (Q0.31 has ONE_Q0)."""
    return 1 << (31 - integer_bits)


def rounding_half_sum(a, b) -> np.ndarray:
    """gemmlowp RoundingHalfSum on int32: (a + b ± 1) / 2, truncated toward zero."""
    total = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    total = total + np.where(total >= 0, 1, -1)
    return np.sign(total) * (np.abs(total) // 2)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))  # a + 1/8
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap32(mul(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + mul(constant_term, wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) in Q0.31 for a ≤ 0 given in Q(integer_bits)."""
    a = np.asarray(a, np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = np.int64(1) << (fractional_bits + exponent)
            result = np.where(remainder & bit, mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, ONE_Q0, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1 / (1 + a) in Q0.31 for a in [0, 1) given in Q0.31 (Newton-Raphson, 3 steps)."""
    half_denominator = rounding_half_sum(a, ONE_Q0)
    x = wrap32(1515870810 + mul(half_denominator, -1010580540))  # 48/17 - 32/17 · d, in Q2.29
    for _ in range(3):
        one_minus_half_denominator_times_x = wrap32(one(2) - mul(half_denominator, x))
        x = wrap32(x + rescale(mul(x, one_minus_half_denominator_times_x), 4, 2))
    return rescale(x, 1, 0)  # ExactMulByPot<-1> then Rescale<0>


def logistic(a, integer_bits: int) -> np.ndarray:
    """gemmlowp logistic: 1 / (1 + exp(-a)) in Q0.31, a in Q(integer_bits)."""
    a = np.asarray(a, np.int64)
    positive = a > 0
    abs_input = np.where(positive, a, wrap32(-a))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(wrap32(-abs_input), integer_bits))
    result_if_negative = wrap32(ONE_Q0 - result_if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, result_if_positive, result_if_negative))


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """GetReciprocal: (1/x scaled into Q0.31, num_bits_over_unit) for x > 0 in Q(x_integer_digits)."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = count_leading_zeros(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def inv_sqrt_quantized_multiplier_exp(values, reverse_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """GetInvSqrtQuantizedMultiplierExp: (multiplier, shift) of 1/sqrt(value), values ≥ 0."""
    values = np.asarray(values, np.int64)
    tiny = values <= 1  # 0 and 1 are answered as 1 by TFLM
    work = np.where(tiny, 2, values)
    shift = np.full(work.shape, 11, np.int64)
    while np.any(work >= 1 << 29):
        big = work >= 1 << 29
        work = np.where(big, work // 4, work)
        shift = shift + big
    left_shift_bit_pairs = (count_leading_zeros(work) - 1) // 2 - 1
    shift = shift - left_shift_bit_pairs
    work = work << (2 * left_shift_bit_pairs)
    fixed_input = work >> 1  # Q3.28
    half_input = rounding_divide_by_pot(fixed_input, 1)
    half_three = (1 << 28) + (1 << 27)
    x = np.full(work.shape, one(3), np.int64)
    for _ in range(5):
        x3 = saturating_left_shift(mul(mul(x, x), x), 6)  # Q9 -> Q3
        x = saturating_left_shift(wrap32(mul(half_three, x) - mul(half_input, x3)), 3)  # Q6 -> Q3
    x = mul(x, 1518500250)  # · sqrt(2)/2
    negative = shift < 0
    x = np.where(negative, wrap32(x << np.where(negative, -shift, 0)), x)
    shift = np.where(negative, 0, shift)
    return np.where(tiny, INT32_MAX, x), np.where(tiny, 0, shift * reverse_shift)
