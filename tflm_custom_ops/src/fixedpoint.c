/* TFLM's integer requantisation primitives (see mcuf/fixedpoint.h).
 *
 * Where TFLM relies on 32-bit wrap-around of signed arithmetic, this file
 * computes in uint32_t and converts back (implementation-defined in C99;
 * modulo 2^32 on every compiler we target), so it stays clean under UBSan.
 */
#include "mcuf/fixedpoint.h"

#include <math.h>

int32_t mcuf_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    /* C99 division truncates toward zero, as gemmlowp's does. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t mcuf_rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* >> of a negative int32_t is arithmetic on every compiler we target,
     * as gemmlowp assumes. */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t mcuf_multiply_by_quantized_multiplier(int32_t x,
                                              int32_t quantized_multiplier,
                                              int shift) {
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return mcuf_rounding_divide_by_pot(
        mcuf_saturating_rounding_doubling_high_mul(shifted,
                                                   quantized_multiplier),
        right_shift);
}

mcuf_status mcuf_quantize_multiplier(double real_multiplier,
                                     int32_t *quantized_multiplier,
                                     int *shift) {
    int exponent = 0;
    int64_t q_fixed;
    if (isnan(real_multiplier) || isinf(real_multiplier)) {
        return MCUF_ERR_ARGUMENT;
    }
    if (real_multiplier == 0.0) {
        *quantized_multiplier = 0;
        *shift = 0;
        return MCUF_OK;
    }
    /* TfLiteRound is std::round: halves away from zero. */
    q_fixed = (int64_t)round(frexp(real_multiplier, &exponent) *
                             (double)((int64_t)1 << 31));
    if (q_fixed == ((int64_t)1 << 31)) {
        q_fixed /= 2;
        ++exponent;
    }
    if (exponent < -31) {
        exponent = 0;
        q_fixed = 0;
    }
    *quantized_multiplier = (int32_t)q_fixed;
    *shift = exponent;
    return MCUF_OK;
}
