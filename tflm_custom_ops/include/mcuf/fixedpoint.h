/* TFLM's integer requantisation primitives, bit-exact, in C99.
 *
 * These compute exactly what TFLite-Micro's reference kernels compute
 * (tensorflow/lite/kernels/internal/common.{h,cc}, quantization_util.cc and
 * gemmlowp's fixedpoint.h) in TFLM's default build, where
 * TFLITE_SINGLE_ROUNDING is off: a multiplier is applied as a saturating
 * rounding doubling high multiply followed by a rounding right shift
 * ("double rounding"). Every fused MCUF kernel requantises through these.
 */
#ifndef MCUF_FIXEDPOINT_H
#define MCUF_FIXEDPOINT_H

#include <stdint.h>

#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gemmlowp::SaturatingRoundingDoublingHighMul (ARM's VQRDMULH): 2*a*b / 2^32
 * rounded to nearest, ties toward +infinity; INT32_MIN * INT32_MIN saturates
 * to INT32_MAX. */
int32_t mcuf_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);

/* gemmlowp::RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away
 * from zero. Requires 0 <= exponent <= 31. */
int32_t mcuf_rounding_divide_by_pot(int32_t x, int exponent);

/* tflite::MultiplyByQuantizedMultiplier(int32_t, int32_t, int): x times
 * quantized_multiplier * 2^(shift - 31). A positive shift is applied as a
 * left shift of x before the multiply (wrapping in 32 bits, as TFLM's does),
 * a negative one as a rounding right shift after it.
 * Requires -31 <= shift <= 30. */
int32_t mcuf_multiply_by_quantized_multiplier(int32_t x,
                                              int32_t quantized_multiplier,
                                              int shift);

/* tflite::QuantizeMultiplier: real_multiplier = q * 2^shift with
 * q = *quantized_multiplier / 2^31 in [0.5, 1) (or 0 for 0, and for
 * multipliers below about 2^-31, which are flushed to zero).
 * Returns MCUF_ERR_ARGUMENT (outputs untouched) for a NaN or infinity. */
mcuf_status mcuf_quantize_multiplier(double real_multiplier,
                                     int32_t *quantized_multiplier, int *shift);

/* mcuf_multiply_by_quantized_multiplier inlined for the kernels' output
 * loops, with the shift split once per channel (left_shift = max(shift, 0),
 * right_shift = max(-shift, 0)): the same integer for every x, provided
 * quantized_multiplier != INT32_MIN (the one case where the doubling high
 * multiply saturates; callers take mcuf_multiply_by_quantized_multiplier
 * there). The high multiply is one 64-bit product: for any 64-bit ab,
 * gemmlowp's (ab + nudge) / 2^31, truncating, equals floor((ab + 2^30) /
 * 2^31). */
static inline int32_t mcuf_requantize(int32_t x, int32_t quantized_multiplier,
                                      int left_shift, int right_shift) {
    const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left_shift) *
                       quantized_multiplier;
    const int32_t high = (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
    const int32_t mask = (int32_t)(((uint32_t)1 << right_shift) - 1u);
    const int32_t threshold = (mask >> 1) + (int32_t)((uint32_t)high >> 31);
    return (high >> right_shift) + ((high & mask) > threshold ? 1 : 0);
}

#ifdef __cplusplus
}
#endif

#endif /* MCUF_FIXEDPOINT_H */
