/* Per-row int8 primitives equal to stock TFLM's int8 kernels (see
 * mcuf/int8_ops.h), with the gemmlowp fixed-point functions they need.
 *
 * As in fixedpoint.c, int32 arithmetic that TFLM lets wrap is done in
 * uint32_t and converted back, so UBSan stays quiet and the bits are TFLM's.
 */
#include "mcuf/int8_ops.h"

#include <stddef.h>

#include "mcuf/dot.h"
#include "mcuf/fixedpoint.h"

#define INT8_LOW (-128)
#define INT8_HIGH 127

/* --- int32 helpers --------------------------------------------------------- */

static int32_t wrapping_add(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static int32_t wrapping_sub(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

static int32_t wrapping_shift_left(int32_t x, int exponent) {
    return (int32_t)((uint32_t)x << exponent);
}

static int8_t clamp_int8(int32_t x, int32_t low, int32_t high) {
    return (int8_t)(x < low ? low : (x > high ? high : x));
}

/* mcuf_saturating_rounding_doubling_high_mul inlined: (ab + nudge) / 2^31
 * truncating is floor((ab + 2^30) / 2^31) (see mcuf_requantize). */
static inline int32_t srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* mcuf_rounding_divide_by_pot inlined. */
static inline int32_t rounding_divide(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t threshold = (mask >> 1) + (int32_t)((uint32_t)x >> 31);
    return (x >> exponent) + ((x & mask) > threshold ? 1 : 0);
}

/* tflite::MultiplyByQuantizedMultiplier, inlined (mcuf/fixedpoint.h). */
static inline int32_t requantize(int32_t x, int32_t multiplier, int shift) {
    if (multiplier == INT32_MIN) {
        return mcuf_multiply_by_quantized_multiplier(x, multiplier, shift);
    }
    return mcuf_requantize(x, multiplier, shift > 0 ? shift : 0,
                           shift > 0 ? 0 : -shift);
}

/* tflite::CountLeadingZeros(uint32_t) (kernels/internal/common.h). */
static int count_leading_zeros(uint32_t x) {
    int zeros = 0;
    if (x == 0) {
        return 32;
    }
    while ((x & 0x80000000u) == 0) {
        x <<= 1;
        ++zeros;
    }
    return zeros;
}

/* gemmlowp SaturatingRoundingMultiplyByPOT<exponent> for 0 <= exponent < 31. */
static int32_t saturating_shift_left(int32_t x, int exponent) {
    const int32_t threshold = (int32_t)(((uint32_t)1 << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return wrapping_shift_left(x, exponent);
}

/* gemmlowp Rescale<dst_bits>(FixedPoint<int32_t, src_bits>). */
static int32_t rescale(int32_t x, int src_bits, int dst_bits) {
    const int exponent = src_bits - dst_bits;
    return exponent >= 0 ? saturating_shift_left(x, exponent)
                         : rounding_divide(x, -exponent);
}

/* tflite::MultiplyByQuantizedMultiplierSmallerThanOneExp (common.h). */
static int32_t multiply_smaller_than_one(int32_t x, int32_t multiplier,
                                         int32_t shift) {
    return rounding_divide(srdhm(x, multiplier), (int)-shift);
}

/* tflite::MultiplyByQuantizedMultiplierGreaterThanOne (common.h). */
static int32_t multiply_greater_than_one(int32_t x, int32_t multiplier,
                                         int32_t left_shift) {
    return srdhm(wrapping_shift_left(x, (int)left_shift), multiplier);
}

/* --- gemmlowp fixedpoint.h, FixedPoint<int32_t, k> as raw int32 ------------ */

#define ONE_Q0 INT32_MAX /* FixedPoint<int32_t, 0>::One() */

/* exp_on_interval_between_negative_one_quarter_and_0_excl (Q0.31). */
static int32_t exp_on_interval(int32_t a) {
    const int32_t constant_term = 1895147668;     /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = wrapping_add(a, 1 << 28);   /* a + 1/8 */
    const int32_t x2 = srdhm(x, x);
    const int32_t x3 = srdhm(x2, x);
    const int32_t x4 = srdhm(x2, x2);
    const int32_t x4_over_4 = rounding_divide(x4, 2);
    const int32_t poly = rounding_divide(
        wrapping_add(srdhm(wrapping_add(x4_over_4, x3), constant_1_over_3),
                     x2),
        1);
    return wrapping_add(constant_term,
                        srdhm(constant_term, wrapping_add(x, poly)));
}

/* exp_on_negative_values: exp(a) in Q0.31 for a <= 0 in Q(integer_bits). */
static int32_t exp_on_negative_values(int32_t a, int integer_bits) {
    static const struct {
        int exponent;
        int32_t multiplier; /* exp(-2^exponent) in Q0.31 */
    } barrel[] = {{-2, 1672461947}, {-1, 1302514674}, {0, 790015084},
                  {1, 290630308},   {2, 39332535},    {3, 720401},
                  {4, 242}};
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter =
        wrapping_sub(a & (one_quarter - 1), one_quarter);
    const int32_t remainder = wrapping_sub(a_mod_quarter_minus_one_quarter, a);
    int32_t result =
        exp_on_interval(rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0));
    unsigned i;
    for (i = 0; i < sizeof barrel / sizeof barrel[0]; ++i) {
        if (integer_bits > barrel[i].exponent &&
            ((uint32_t)remainder &
             ((uint32_t)1 << (fractional_bits + barrel[i].exponent))) != 0) {
            result = srdhm(result, barrel[i].multiplier);
        }
    }
    if (integer_bits > 5 && a < -((int32_t)1 << (36 - integer_bits))) {
        result = 0;
    }
    return a == 0 ? ONE_Q0 : result;
}

/* one_over_one_plus_x_for_x_in_0_1: Newton-Raphson, three steps, Q0.31. */
static int32_t one_over_one_plus_x(int32_t a) {
    const int64_t sum = (int64_t)a + ONE_Q0;
    const int32_t half_denominator =
        (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2); /* RoundingHalfSum */
    int32_t x = wrapping_add(1515870810, srdhm(half_denominator, -1010580540));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus_half_denominator_times_x =
            wrapping_sub((int32_t)1 << 29, srdhm(half_denominator, x));
        x = wrapping_add(
            x, rescale(srdhm(x, one_minus_half_denominator_times_x), 4, 2));
    }
    return rescale(x, 1, 0); /* Rescale<0>(ExactMulByPot<-1>(x)) */
}

/* logistic: 1 / (1 + exp(-a)) in Q0.31, a in Q(integer_bits). */
static int32_t fixedpoint_logistic(int32_t a, int integer_bits) {
    const int32_t abs_input = a > 0 ? a : wrapping_sub(0, a);
    const int32_t result_if_positive = one_over_one_plus_x(
        exp_on_negative_values(wrapping_sub(0, abs_input), integer_bits));
    if (a == 0) {
        return 1 << 30;
    }
    return a > 0 ? result_if_positive
                 : wrapping_sub(ONE_Q0, result_if_positive);
}

/* tflite::GetReciprocal (common.h): 1/x in Q0.31 and its exponent. */
static int32_t get_reciprocal(int32_t x, int x_integer_digits,
                              int *num_bits_over_unit) {
    const int headroom_plus_one = count_leading_zeros((uint32_t)x);
    const uint32_t shifted = (uint32_t)((uint64_t)(uint32_t)x << headroom_plus_one);
    *num_bits_over_unit = x_integer_digits - headroom_plus_one;
    return one_over_one_plus_x((int32_t)(shifted - ((uint32_t)1 << 31)));
}

/* tflite::GetInvSqrtQuantizedMultiplierExp (common.h), reverse_shift -1. */
static void inv_sqrt_multiplier_exp(int32_t input, int32_t *multiplier,
                                    int *shift) {
    const int32_t half_three = (1 << 28) + (1 << 27); /* 1.5 in Q3.28 */
    int32_t half_input;
    int32_t x = 1 << 28; /* FixedPoint<int32_t, 3>::One() */
    int left_shift_bit_pairs;
    int output_shift = 11;
    int i;
    if (input <= 1) {
        *multiplier = INT32_MAX;
        *shift = 0;
        return;
    }
    while (input >= (1 << 29)) {
        input /= 4;
        ++output_shift;
    }
    left_shift_bit_pairs = (count_leading_zeros((uint32_t)input) - 1) / 2 - 1;
    output_shift -= left_shift_bit_pairs;
    input <<= 2 * left_shift_bit_pairs;
    half_input = rounding_divide(input >> 1, 1);
    for (i = 0; i < 5; ++i) {
        const int32_t x3 = rescale(srdhm(srdhm(x, x), x), 9, 3);
        x = rescale(wrapping_sub(srdhm(half_three, x), srdhm(half_input, x3)),
                    6, 3);
    }
    x = srdhm(x, 1518500250); /* sqrt(2) / 2 */
    if (output_shift < 0) {
        x = wrapping_shift_left(x, -output_shift);
        output_shift = 0;
    }
    *multiplier = x;
    *shift = -output_shift;
}

/* --- FULLY_CONNECTED ------------------------------------------------------- */

#ifdef MCUF_DOT_DSP
/* Whether an element-wise op's output requantisation (multiplier, shift,
 * activation range) can be mcuf_requantize_s8: its scale allows it and the
 * activation clamps no more than int8 does. */
static int s8_output_applies(int32_t multiplier, int32_t shift, int32_t low,
                             int32_t high) {
    return mcuf_requantize_s8_applies(multiplier, shift) && low == INT8_LOW &&
           high == INT8_HIGH;
}
#endif

/* One output of FULLY_CONNECTED from its accumulated products. */
static int8_t fc_output(const mcuf_fc_params *params, uint32_t acc,
                        const int32_t *bias, int32_t o) {
    int32_t multiplier = params->multiplier;
    int32_t shift = params->shift;
    if (bias != NULL) {
        acc += (uint32_t)bias[o];
    }
    if (params->multipliers != NULL) {
        multiplier = params->multipliers[o];
        shift = params->shifts[o];
    }
    return clamp_int8(
        wrapping_add(requantize(
                         (int32_t)acc, multiplier, (int)shift),
                     params->output_offset),
        params->activation_min, params->activation_max);
}

/* One output of FULLY_CONNECTED with packed INT4 weights, value by value
 * (TFLM: unpacked to int8, then the same sum). */
static uint32_t dot_s4(const mcuf_fc_params *params, const int8_t *input,
                       const int8_t *weights, int64_t at, int32_t depth) {
    uint32_t acc = 0;
    int32_t k;
    for (k = 0; k < depth; ++k) {
        acc += (uint32_t)((mcuf_uint4_at(weights, at + k) - 8 + params->weights_offset) *
                          (input[k] + params->input_offset));
    }
    return acc;
}

void mcuf_fully_connected_row(const mcuf_fc_params *params,
                              const int8_t *input, int32_t input_depth,
                              const int8_t *weights, const int32_t *bias,
                              int32_t output_depth, int8_t *output) {
    int32_t o;
    if (params->weight_bits == 4) {
        for (o = 0; o < output_depth; ++o) {
            output[o] = fc_output(params, dot_s4(params, input, weights,
                                                 (int64_t)o * input_depth, input_depth),
                                  bias, o);
        }
        return;
    }
    for (o = 0; o + 2 <= output_depth; o += 2) { /* two rows share input */
        const int8_t *row = weights + (int64_t)o * input_depth;
        uint32_t sums[2];
        mcuf_dot_s8_x2(row, row + input_depth, params->weights_offset, input,
                       params->input_offset, input_depth, sums);
        output[o] = fc_output(params, sums[0], bias, o);
        output[o + 1] = fc_output(params, sums[1], bias, o + 1);
    }
    if (o < output_depth) {
        output[o] = fc_output(
            params,
            mcuf_dot_s8(weights + (int64_t)o * input_depth,
                        params->weights_offset, input, params->input_offset,
                        input_depth),
            bias, o);
    }
}

/* Requantises a tile's n_rows sums of one output channel (bias included)
 * to out[r * row_step], exactly as fc_output. */
static void tile_channel_outputs(const mcuf_fc_params *params,
                                 const uint32_t sums[MCUF_TILE], int32_t n_rows,
                                 int32_t multiplier, int32_t shift, int8_t *out,
                                 int32_t row_step) {
    const int left = shift > 0 ? (int)shift : 0;
    const int right = shift > 0 ? 0 : (int)-shift;
    int32_t r;
    for (r = 0; r < n_rows; ++r) {
        const int32_t scaled =
            multiplier != INT32_MIN
                ? mcuf_requantize((int32_t)sums[r], multiplier, left, right)
                : requantize((int32_t)sums[r], multiplier, (int)shift);
        out[(int64_t)r * row_step] = clamp_int8(
            wrapping_add(scaled, params->output_offset),
            params->activation_min, params->activation_max);
    }
}

#ifdef MCUF_DOT_DSP
/* Whether every one of count channels' scales (multipliers/shifts, or the
 * one multiplier/shift when multipliers is NULL) and the activation range
 * let mcuf_requantize_s8 requantise them. */
static int fc_scales_s8(const mcuf_fc_params *params, int32_t count) {
    int32_t o;
    if (params->multipliers == NULL) {
        return s8_output_applies(params->multiplier, params->shift,
                                 params->activation_min, params->activation_max);
    }
    for (o = 0; o < count; ++o) {
        if (!s8_output_applies(params->multipliers[o], params->shifts[o],
                               params->activation_min, params->activation_max)) {
            return 0;
        }
    }
    return 1;
}

/* Channels [0, count) of a full tile on the DSP path where fc_scales_s8
 * holds: each channel's four sums start at init[r] +
 * bias, stay in registers through the dot products and the
 * requantisation. */
static inline __attribute__((always_inline)) void fc_tile_s8(
    const mcuf_fc_params *params, const int16_t *tile,
    const uint32_t init[MCUF_TILE], const int8_t *weights, int32_t depth,
    int32_t rest, const int32_t *bias, int32_t count, int8_t *output,
    int32_t row_step, int32_t channel_step) {
    const int32_t *multipliers = params->multipliers;
    const int32_t *shifts = params->shifts;
    const int32_t offset = params->output_offset;
    const int32_t groups = depth >> 2;
    const uint32_t i0 = init[0], i1 = init[1], i2 = init[2], i3 = init[3];
    int8_t *const end = output + (int64_t)count * channel_step;
    int32_t multiplier = params->multiplier;
    int right = (int)-params->shift;
    for (; output != end; weights += depth, output += channel_step) {
        const uint32_t b = bias != NULL ? (uint32_t)*bias++ : 0u;
        const uint32_t *x = (const uint32_t *)(const void *)tile;
        const int8_t *w = weights;
        int32_t acc[MCUF_TILE];
        int32_t rounding;
        acc[0] = (int32_t)(i0 + b);
        acc[1] = (int32_t)(i1 + b);
        acc[2] = (int32_t)(i2 + b);
        acc[3] = (int32_t)(i3 + b);
        if (groups & 1) {
            mcuf_dot_tile_group(&x, &w, acc);
        }
        if (groups >> 1) {
            mcuf_dot_tile_pairs(&x, &w, groups >> 1, acc);
        }
        if (rest) { /* the depth % 4 values past the groups */
            mcuf_dot_tile_rest((const int16_t *)(const void *)x, w, rest, acc);
        }
        if (multipliers != NULL) {
            multiplier = *multipliers++;
            right = (int)-*shifts++;
        }
        rounding = mcuf_requantize_s8_rounding(right, offset);
        output[0] = (int8_t)mcuf_requantize_s8(acc[0], multiplier, right, rounding);
        output[row_step] = (int8_t)mcuf_requantize_s8(acc[1], multiplier, right, rounding);
        output[2 * row_step] = (int8_t)mcuf_requantize_s8(acc[2], multiplier, right, rounding);
        output[3 * row_step] = (int8_t)mcuf_requantize_s8(acc[3], multiplier, right, rounding);
    }
}
#endif

#ifdef MCUF_DOT_DSP
/* fc_tile_s4 for a full tile on the DSP path where fc_scales_s8 holds: as
 * fc_tile_s8, each channel's four sums stay in registers from init + bias
 * through the requantisation; channel c's weights from value at + c depth
 * of the packed weights. */
static void fc_tile_u4_s8(const mcuf_fc_params *params, const int16_t *tile,
                          const uint32_t init[MCUF_TILE], const int8_t *weights,
                          int64_t at, int32_t depth, const int32_t *bias,
                          int32_t count, int8_t *output, int32_t row_step,
                          int32_t channel_step) {
    const int32_t *multipliers = params->multipliers;
    const int32_t *shifts = params->shifts;
    const int32_t offset = params->output_offset;
    int8_t *const end = output + (int64_t)count * channel_step;
    int32_t multiplier = params->multiplier;
    int right = (int)-params->shift;
    for (; output != end; at += depth, output += channel_step) {
        const uint32_t b = bias != NULL ? (uint32_t)*bias++ : 0u;
        uint32_t acc[MCUF_TILE];
        int32_t rounding;
        acc[0] = init[0] + b;
        acc[1] = init[1] + b;
        acc[2] = init[2] + b;
        acc[3] = init[3] + b;
        mcuf_dot_tile_u4(tile, weights, at, depth, acc);
        if (multipliers != NULL) {
            multiplier = *multipliers++;
            right = (int)-*shifts++;
        }
        rounding = mcuf_requantize_s8_rounding(right, offset);
        output[0] = (int8_t)mcuf_requantize_s8((int32_t)acc[0], multiplier, right, rounding);
        output[row_step] = (int8_t)mcuf_requantize_s8((int32_t)acc[1], multiplier, right, rounding);
        output[2 * row_step] = (int8_t)mcuf_requantize_s8((int32_t)acc[2], multiplier, right, rounding);
        output[3 * row_step] = (int8_t)mcuf_requantize_s8((int32_t)acc[3], multiplier, right, rounding);
    }
}
#endif

/* mcuf_fc_tile with packed INT4 weights (mcuf/dot.h: the nibbles read as
 * u = v + 8, the -8 with the weights' offset), channels from weights row
 * `first` on; params' per-channel arrays and bias start at channel first. */
static void fc_tile_s4(const mcuf_fc_params *params, const int16_t *tile,
                       const int32_t row_sums[MCUF_TILE], int32_t n_rows,
                       int32_t depth, const int8_t *weights, int32_t first,
                       const int32_t *bias, int32_t count, int8_t *output,
                       int32_t row_step, int32_t channel_step) {
    const uint32_t offset = (uint32_t)params->weights_offset - 8u;
    uint32_t init[MCUF_TILE];
    int64_t at = (int64_t)first * depth;
    int32_t o, r;
#ifdef MCUF_DOT_DSP
    const int fast = fc_scales_s8(params, count);
#endif
    for (r = 0; r < MCUF_TILE; ++r) {
        init[r] = offset * (uint32_t)row_sums[r];
    }
#ifdef MCUF_DOT_DSP
    if (fast && n_rows == MCUF_TILE) {
        fc_tile_u4_s8(params, tile, init, weights, at, depth, bias, count,
                      output, row_step, channel_step);
        return;
    }
#endif
    for (o = 0; o < count; ++o, at += depth, output += channel_step) {
        const uint32_t b = bias != NULL ? (uint32_t)bias[o] : 0u;
        const int32_t multiplier = params->multipliers != NULL ? params->multipliers[o]
                                                               : params->multiplier;
        const int32_t shift = params->multipliers != NULL ? params->shifts[o] : params->shift;
        uint32_t acc[MCUF_TILE];
        for (r = 0; r < MCUF_TILE; ++r) {
            acc[r] = init[r] + b;
        }
        mcuf_dot_tile_u4(tile, weights, at, depth, acc);
#ifdef MCUF_DOT_DSP
        if (fast) {
            const int right = (int)-shift;
            const int32_t rounding =
                mcuf_requantize_s8_rounding(right, params->output_offset);
            for (r = 0; r < n_rows; ++r) {
                output[(int64_t)r * row_step] = (int8_t)mcuf_requantize_s8(
                    (int32_t)acc[r], multiplier, right, rounding);
            }
            continue;
        }
#endif
        tile_channel_outputs(params, acc, n_rows, multiplier, shift, output, row_step);
    }
}

void mcuf_fc_tile(const mcuf_fc_params *params_all, const int16_t *tile,
                  const int32_t row_sums[MCUF_TILE], int32_t n_rows, int32_t depth, const int8_t *weights,
                  const int32_t *bias, int32_t first, int32_t count,
                  int8_t *output, int32_t row_step, int32_t channel_step) {
    mcuf_fc_params channels = *params_all; /* per-channel arrays from first */
    const mcuf_fc_params *params = &channels;
    const int32_t *multipliers;
    int32_t multiplier = params->multiplier;
    int32_t shift = params->shift;
    uint32_t init[MCUF_TILE]; /* the weights' offset times row sums */
    int32_t o, r;
    if (channels.multipliers != NULL) {
        channels.multipliers += first;
        channels.shifts += first;
    }
    if (bias != NULL) {
        bias += first;
    }
    if (params->weight_bits == 4) {
        fc_tile_s4(params, tile, row_sums, n_rows, depth, weights, first, bias,
                   count, output, row_step, channel_step);
        return;
    }
    weights += (int64_t)first * depth;
    multipliers = params->multipliers;
    for (r = 0; r < MCUF_TILE; ++r) {
        init[r] = (uint32_t)params->weights_offset * (uint32_t)row_sums[r];
    }
#ifdef MCUF_DOT_DSP
    if (n_rows == MCUF_TILE && fc_scales_s8(params, count)) {
        if ((depth & 3) == 0) { /* a copy of the loop without the rest */
            fc_tile_s8(params, tile, init, weights, depth, 0, bias, count,
                       output, row_step, channel_step);
        } else {
            fc_tile_s8(params, tile, init, weights, depth, depth & 3, bias,
                       count, output, row_step, channel_step);
        }
        return;
    }
#endif
    for (o = 0; o < count; ++o, weights += depth, output += channel_step) {
        const uint32_t b = bias != NULL ? (uint32_t)bias[o] : 0u;
        uint32_t sums[MCUF_TILE];
        if (multipliers != NULL) {
            multiplier = multipliers[o];
            shift = params->shifts[o];
        }
        for (r = 0; r < MCUF_TILE; ++r) {
            sums[r] = init[r] + b;
        }
        mcuf_dot_tile(tile, weights, depth, sums, sums); /* init may be sums */
        tile_channel_outputs(params, sums, n_rows, multiplier, shift, output, row_step);
    }
}

void mcuf_fully_connected_rows(const mcuf_fc_params *params,
                               const int8_t *input, int32_t n_rows,
                               int32_t input_depth, const int8_t *weights,
                               const int32_t *bias, int32_t output_depth,
                               int8_t *output, int16_t *tile) {
    int32_t row_sums[MCUF_TILE];
    int32_t t;
    for (t = 0; t < n_rows; t += MCUF_TILE) {
        const int32_t rows = n_rows - t < MCUF_TILE ? n_rows - t : MCUF_TILE;
        mcuf_tile_widen(input + (int64_t)t * input_depth, input_depth, rows,
                        input_depth, params->input_offset, params->weight_bits,
                        tile, row_sums);
        mcuf_fc_tile(params, tile, row_sums, rows, input_depth, weights, bias,
                     0, output_depth, output + (int64_t)t * output_depth,
                     output_depth, 1);
    }
}

/* --- ADD, SUB, MUL ----------------------------------------------------------- */


/* The rescaled inputs of AddFunc (reference/integer_ops/add.h). */
static void add_scaled_inputs(const mcuf_add_params *p, int8_t input1,
                              int8_t input2, int32_t *scaled1,
                              int32_t *scaled2) {
    const int32_t shifted1 =
        wrapping_shift_left(input1 + p->input1_offset, (int)p->left_shift);
    const int32_t shifted2 =
        wrapping_shift_left(input2 + p->input2_offset, (int)p->left_shift);
    *scaled1 = multiply_smaller_than_one(shifted1, p->input1_multiplier,
                                         p->input1_shift);
    *scaled2 = multiply_smaller_than_one(shifted2, p->input2_multiplier,
                                         p->input2_shift);
}

static int8_t add_output(const mcuf_add_params *p, int32_t raw) {
    return clamp_int8(
        wrapping_add(multiply_smaller_than_one(raw, p->output_multiplier,
                                               p->output_shift),
                     p->output_offset),
        p->activation_min, p->activation_max);
}

int8_t mcuf_add(const mcuf_add_params *params, int8_t input1, int8_t input2) {
    int32_t scaled1, scaled2;
    add_scaled_inputs(params, input1, input2, &scaled1, &scaled2);
    return add_output(params, wrapping_add(scaled1, scaled2));
}

int8_t mcuf_sub(const mcuf_add_params *params, int8_t input1, int8_t input2) {
    int32_t scaled1, scaled2;
    add_scaled_inputs(params, input1, input2, &scaled1, &scaled2);
    return add_output(params, wrapping_sub(scaled1, scaled2));
}

int8_t mcuf_mul(const mcuf_mul_params *params, int8_t input1, int8_t input2) {
    const int32_t product =
        (input1 + params->input1_offset) * (input2 + params->input2_offset);
    return clamp_int8(
        wrapping_add(requantize(
                         product, params->output_multiplier,
                         (int)params->output_shift),
                     params->output_offset),
        params->activation_min, params->activation_max);
}

void mcuf_add_row(const mcuf_add_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size) {
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = mcuf_add(params, input1[i * input1_step],
                             input2[i * input2_step]);
    }
}

void mcuf_sub_row(const mcuf_add_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size) {
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = mcuf_sub(params, input1[i * input1_step],
                             input2[i * input2_step]);
    }
}

void mcuf_mul_row(const mcuf_mul_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size) {
    int32_t i = 0;
#ifdef MCUF_DOT_DSP
    if (s8_output_applies(params->output_multiplier, params->output_shift,
                          params->activation_min, params->activation_max)) {
        const int32_t multiplier = params->output_multiplier;
        const int right = (int)-params->output_shift;
        const int32_t rounding =
            mcuf_requantize_s8_rounding(right, params->output_offset);
        const int32_t offset1 = params->input1_offset;
        const int32_t offset2 = params->input2_offset;
        for (; i < size; ++i) { /* |product| <= 2^16: no doubling saturates */
            const int32_t product = (input1[i * input1_step] + offset1) *
                                    (input2[i * input2_step] + offset2);
            output[i] = (int8_t)mcuf_requantize_s8(product, multiplier, right,
                                                   rounding);
        }
    }
#endif
    for (; i < size; ++i) {
        output[i] = mcuf_mul(params, input1[i * input1_step],
                             input2[i * input2_step]);
    }
}

static int32_t add_scaled_input(int32_t left_shift, int32_t offset,
                                int32_t multiplier, int32_t shift,
                                int8_t input) {
    return multiply_smaller_than_one(
        wrapping_shift_left(input + offset, (int)left_shift), multiplier, shift);
}

void mcuf_add_tables(const mcuf_add_params *params, int32_t input1[256],
                     int32_t input2[256]) {
    const mcuf_add_params *p = params;
    int32_t v;
    for (v = -128; v <= 127; ++v) { /* a NULL table is not made */
        if (input1 != NULL) {
            input1[v + 128] =
                add_scaled_input(p->left_shift, p->input1_offset,
                                 p->input1_multiplier, p->input1_shift, (int8_t)v);
        }
        if (input2 != NULL) {
            input2[v + 128] =
                add_scaled_input(p->left_shift, p->input2_offset,
                                 p->input2_multiplier, p->input2_shift, (int8_t)v);
        }
    }
}

void mcuf_add_row_tables(const mcuf_add_params *params, int subtract,
                         const int32_t input1_table[256],
                         const int8_t *input1, int32_t input1_step,
                         const int32_t input2_table[256],
                         const int8_t *input2, int32_t input2_step,
                         int8_t *output, int32_t size) {
    const int32_t multiplier = params->output_multiplier;
    const int right = (int)-params->output_shift;
    const int32_t offset = params->output_offset;
    const int32_t low = params->activation_min, high = params->activation_max;
    const int32_t b0 = add_scaled_input(
        params->left_shift, params->input2_offset, params->input2_multiplier,
        params->input2_shift, input2[0]);
    int32_t i = 0;
#ifdef MCUF_DOT_DSP
    if (s8_output_applies(multiplier, params->output_shift, low, high)) {
        const int32_t rounding = mcuf_requantize_s8_rounding(right, offset);
        /* a - b as a + ((b ^ flip) - flip) = a + (0 - b), wrapping as TFLM's */
        const uint32_t flip = subtract ? ~0u : 0u;
        const uint32_t b0_signed = ((uint32_t)b0 ^ flip) - flip;
        const int32_t *table1 = input1_table + 128; /* indexed by the int8 */
        for (; input2_table == NULL && i < size; ++i) {
            output[i] = (int8_t)mcuf_requantize_s8(
                (int32_t)((uint32_t)table1[input1[i * input1_step]] + b0_signed),
                multiplier, right, rounding);
        }
        for (; i < size; ++i) {
            const uint32_t b = (uint32_t)input2_table[input2[i * input2_step] + 128];
            output[i] = (int8_t)mcuf_requantize_s8(
                (int32_t)((uint32_t)table1[input1[i * input1_step]] + ((b ^ flip) - flip)),
                multiplier, right, rounding);
        }
    }
#endif
    for (; i < size; ++i) {
        const int32_t a = input1_table[input1[i * input1_step] + 128];
        const int32_t b = input2_table != NULL
                              ? input2_table[input2[i * input2_step] + 128]
                              : b0;
        const int32_t raw = subtract ? wrapping_sub(a, b) : wrapping_add(a, b);
        const int32_t scaled = multiplier != INT32_MIN
                                   ? mcuf_requantize(raw, multiplier, 0, right)
                                   : multiply_smaller_than_one(
                                         raw, multiplier, params->output_shift);
        output[i] = clamp_int8(wrapping_add(scaled, offset), low, high);
    }
}

/* --- MEAN, RSQRT, LOGISTIC ----------------------------------------------------- */

/* The sum of a row's int8 values modulo 2^32. With the DSP extension four
 * at a time: USADA8 adds a word's four bytes as unsigned values, which the
 * values + 128 (each byte's top bit flipped) are; 128 a value comes off at
 * the end. */
static uint32_t row_sum(const int8_t *input, int32_t size) {
    uint32_t sum = 0;
    int32_t i = 0;
#ifdef MCUF_DOT_DSP
    for (; i + 4 <= size; i += 4) {
        sum = __usada8(mcuf_dot_load4(input + i) ^ 0x80808080u, 0u, sum);
    }
    sum -= 128u * (uint32_t)i;
#endif
    for (; i < size; ++i) {
        sum += (uint32_t)input[i];
    }
    return sum;
}

void mcuf_mean_fold(const mcuf_mean_params *params, int32_t size,
                    mcuf_mean_folded *folded) {
    /* QuantizedMeanOrSum folds 1/size into the multiplier: shift =
     * floor(log2(size)), at most 32 and 31 + output_shift. */
    int fold = 31 - count_leading_zeros((uint32_t)size);
    if (fold > 31 + params->shift) {
        fold = 31 + params->shift;
    }
    folded->multiplier = (int32_t)(((int64_t)params->multiplier << fold) / size);
    folded->shift = params->shift - fold;
}

int8_t mcuf_mean_row_folded(const mcuf_mean_params *params,
                            const mcuf_mean_folded *folded,
                            const int8_t *input, int32_t size) {
    const uint32_t sum = row_sum(input, size) -
                         (uint32_t)params->input_zero_point * (uint32_t)size;
    return clamp_int8(
        wrapping_add(requantize((int32_t)sum, folded->multiplier,
                                (int)folded->shift),
                     params->output_zero_point),
        INT8_LOW, INT8_HIGH);
}

int8_t mcuf_mean_row(const mcuf_mean_params *params, const int8_t *input,
                     int32_t size) {
    mcuf_mean_folded folded;
    mcuf_mean_fold(params, size, &folded);
    return mcuf_mean_row_folded(params, &folded, input, size);
}

mcuf_status mcuf_rsqrt(const mcuf_rsqrt_params *params, int8_t input,
                       int8_t *output) {
    const int32_t kShift = 20; /* RsqrtEvalQuantized's kShift */
    const int32_t value = input - params->input_zero_point;
    int32_t inv_sqrt_multiplier;
    int inv_sqrt_shift;
    int32_t data;
    if (value < 0) {
        return MCUF_ERR_ARGUMENT;
    }
    if (value == 0) {
        *output = INT8_HIGH;
        return MCUF_OK;
    }
    inv_sqrt_multiplier_exp(value, &inv_sqrt_multiplier, &inv_sqrt_shift);
    data = requantize(1, inv_sqrt_multiplier,
                                                 inv_sqrt_shift + kShift);
    *output = clamp_int8(
        wrapping_add(requantize(
                         data, params->multiplier,
                         (int)(params->shift - kShift)),
                     params->output_zero_point),
        INT8_LOW, INT8_HIGH);
    return MCUF_OK;
}

int8_t mcuf_logistic(const mcuf_logistic_params *params, int8_t input) {
    const int input_integer_bits = 4;
    const int output_integer_bits = 8;
    const int32_t centred = input - params->input_zero_point;
    int32_t output_in_q0;
    if (centred <= -(int64_t)params->input_range_radius) { /* any radius */
        return INT8_LOW;
    }
    if (centred >= params->input_range_radius) {
        return INT8_HIGH;
    }
    output_in_q0 = fixedpoint_logistic(
        requantize(centred, params->input_multiplier,
                                              (int)params->input_left_shift),
        input_integer_bits);
    return clamp_int8(rounding_divide(output_in_q0,
                                                  31 - output_integer_bits) +
                          INT8_LOW,
                      INT8_LOW, INT8_HIGH);
}

/* --- SOFTMAX, BATCH_MATMUL ------------------------------------------------------ */

#define SOFTMAX_SCALED_DIFF_INTEGER_BITS 5
#define SOFTMAX_ACCUMULATION_INTEGER_BITS 12

/* exp(input - row max) in Q0.31, as reference/softmax.h computes it. */
static int32_t softmax_exp(const mcuf_softmax_params *p, int32_t diff) {
    return exp_on_negative_values(
        multiply_greater_than_one(diff, p->input_multiplier,
                                  p->input_left_shift),
        SOFTMAX_SCALED_DIFF_INTEGER_BITS);
}

/* srdhm for a, b >= 0, where it never saturates. */
static inline int32_t srdhm_nonneg(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* rounding_divide for x >= 0: the sign term is 0 and (x & mask) > mask / 2
 * is bit exponent - 1 of x. */
static inline int32_t rounding_divide_nonneg(int32_t x, int exponent) {
    return exponent == 0 ? x : (x >> exponent) + ((x >> (exponent - 1)) & 1);
}

/* The largest of a row's int8 values (-128 for an empty row). With the DSP
 * extension four at a time: SSUB8 sets each byte lane's GE flag where the
 * new value is at least the running maximum, SEL takes those lanes. */
static int32_t row_max(const int8_t *input, int32_t size) {
    int32_t best = INT8_LOW;
    int32_t c = 0;
#ifdef MCUF_DOT_DSP
    uint32_t lanes = 0x80808080u, difference;
    int k;
    for (; c + 4 <= size; c += 4) {
        __asm__("ssub8 %[d], %[v], %[m]\n\tsel %[m], %[v], %[m]"
                : [m] "+r"(lanes), [d] "=&r"(difference)
                : [v] "r"(mcuf_dot_load4(input + c))
                : "cc");
    }
    for (k = 0; k < 4; ++k) {
        const int32_t lane = (int8_t)(lanes >> (8 * k));
        best = lane > best ? lane : best;
    }
#endif
    for (; c < size; ++c) {
        best = input[c] > best ? input[c] : best;
    }
    return best;
}

/* clamp(x - 128, -128, 127) for x >= 0. */
static inline int8_t softmax_byte(int32_t x) {
#ifdef MCUF_DOT_DSP
    return (int8_t)__ssat(x + INT8_LOW, 8);
#else
    return (int8_t)(x + INT8_LOW > INT8_HIGH ? INT8_HIGH : x + INT8_LOW);
#endif
}

/* The softmax's output pass: exp(input - max) times the reciprocal of the
 * sum, rounded by 2^exponent. For exponent >= 1 the non-negative rounding
 * (x >> e) + bit e - 1 of x is ((x >> (e - 1)) + 1) >> 1, and the loop is
 * split on it so that no element tests it. */
static void softmax_outputs(const int32_t table[256], int32_t max_in_row,
                            int32_t shifted_scale, int exponent,
                            const int8_t *input, int32_t size, int8_t *output) {
    int32_t c;
    if (exponent == 0) {
        for (c = 0; c < size; ++c) {
            output[c] = softmax_byte(
                srdhm_nonneg(shifted_scale, table[max_in_row - input[c]]));
        }
        return;
    }
    for (c = 0; c < size; ++c) {
        const int32_t x =
            srdhm_nonneg(shifted_scale, table[max_in_row - input[c]]);
        output[c] = softmax_byte(((x >> (exponent - 1)) + 1) >> 1);
    }
}

/* SOFTMAX over one row, exp(input - row max) from `table` (indexed by
 * max - input, 0 where input - max < diff_min: such an input adds nothing
 * to the sum and gives -128, as in TFLM). Every exponential and the
 * reciprocal are >= 0, so the rescales are the non-negative forms. */
static mcuf_status softmax_row(const int32_t table[256], const int8_t *input,
                               int32_t size, int8_t *output) {
    int32_t max_in_row;
    uint32_t sum_of_exps = 0;
    int num_bits_over_unit;
    int32_t shifted_scale;
    int exponent;
    int32_t c;
    max_in_row = row_max(input, size);
    for (c = 0; c < size; ++c) {
        sum_of_exps += (uint32_t)rounding_divide_nonneg(
            table[max_in_row - input[c]], SOFTMAX_ACCUMULATION_INTEGER_BITS);
    }
    shifted_scale = get_reciprocal((int32_t)sum_of_exps,
                                   SOFTMAX_ACCUMULATION_INTEGER_BITS,
                                   &num_bits_over_unit);
    exponent = num_bits_over_unit + 31 - 8;
    if (exponent < 0 || exponent > 31) {
        return MCUF_ERR_ARGUMENT;
    }
    softmax_outputs(table, max_in_row, shifted_scale, exponent, input, size,
                    output);
    return MCUF_OK;
}

mcuf_status mcuf_softmax_row(const mcuf_softmax_params *params,
                             const int8_t *input, int32_t size,
                             int8_t *output) {
    int32_t table[256];
    mcuf_softmax_exp_table(params, table);
    return softmax_row(table, input, size, output);
}

void mcuf_softmax_exp_table(const mcuf_softmax_params *params,
                            int32_t table[256]) {
    int32_t d;
    for (d = 0; d < 256; ++d) {
        table[d] = -d >= params->diff_min ? softmax_exp(params, -d) : 0;
    }
}

mcuf_status mcuf_softmax_row_table(const int32_t table[256],
                                   const int8_t *input, int32_t size,
                                   int8_t *output) {
    return softmax_row(table, input, size, output);
}

static int8_t batch_matmul_output(const mcuf_batch_matmul_params *params,
                                  uint32_t total) {
    return clamp_int8(
        wrapping_add(requantize(
                         (int32_t)total, params->multiplier,
                         (int)params->shift),
                     params->output_offset),
        INT8_LOW, INT8_HIGH);
}

void mcuf_batch_matmul_row(const mcuf_batch_matmul_params *params,
                           const int8_t *lhs_row, int32_t depth,
                           const int8_t *rhs, int32_t columns,
                           int8_t *output) {
    int32_t n = 0;
    if (params->rhs_transposed) { /* rhs rows are contiguous: dot products */
        for (; n + 2 <= columns; n += 2) {
            const int8_t *row = rhs + (int64_t)n * depth;
            uint32_t sums[2];
            mcuf_dot_s8_x2(row, row + depth, params->rhs_offset, lhs_row,
                           params->lhs_offset, depth, sums);
            output[n] = batch_matmul_output(params, sums[0]);
            output[n + 1] = batch_matmul_output(params, sums[1]);
        }
        if (n < columns) {
            output[n] = batch_matmul_output(
                params, mcuf_dot_s8(rhs + (int64_t)n * depth, params->rhs_offset,
                                    lhs_row, params->lhs_offset, depth));
        }
        return;
    }
    for (; n < columns; ++n) { /* rhs [depth][columns]: a strided column */
        uint32_t total = 0;
        int32_t k;
        for (k = 0; k < depth; ++k) {
            total += (uint32_t)((lhs_row[k] + params->lhs_offset) *
                                (rhs[n + (int64_t)k * columns] +
                                 params->rhs_offset));
        }
        output[n] = batch_matmul_output(params, total);
    }
}

/* A BATCH_MATMUL's requantisation as FULLY_CONNECTED params (per tensor,
 * no activation: clamped to int8). */
static mcuf_fc_params batch_matmul_as_fc(const mcuf_batch_matmul_params *p) {
    mcuf_fc_params fc;
    fc.input_offset = p->lhs_offset;
    fc.weights_offset = p->rhs_offset;
    fc.output_offset = p->output_offset;
    fc.activation_min = INT8_LOW;
    fc.activation_max = INT8_HIGH;
    fc.multiplier = p->multiplier;
    fc.shift = p->shift;
    fc.multipliers = NULL;
    fc.shifts = NULL;
    fc.weight_bits = 8;
    return fc;
}

void mcuf_batch_matmul_tile(const mcuf_batch_matmul_params *params,
                            const int16_t *tile,
                            const int32_t row_sums[MCUF_TILE], int32_t n_rows,
                            int32_t depth, const int8_t *rhs, int32_t columns,
                            int8_t *output, int32_t row_step,
                            int32_t column_step) {
    const mcuf_fc_params fc = batch_matmul_as_fc(params);
    mcuf_fc_tile(&fc, tile, row_sums, n_rows, depth, rhs, NULL, 0, columns,
                 output, row_step, column_step);
}

void mcuf_batch_matmul_rows(const mcuf_batch_matmul_params *params,
                            const int8_t *lhs, int32_t n_rows, int32_t depth,
                            const int8_t *rhs, int32_t columns,
                            int8_t *output, int16_t *tile) {
    const mcuf_fc_params fc = batch_matmul_as_fc(params);
    mcuf_fully_connected_rows(&fc, lhs, n_rows, depth, rhs, NULL, columns,
                              output, tile);
}
