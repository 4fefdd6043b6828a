/* TFLM's Prepare arithmetic for the block builtins (see mcuf/prepare.h);
 * every step mirrors mcuformer_tf.tflm_arith's prepare_* in double. */
#include "mcuf/prepare.h"

#include <math.h>
#include <stddef.h>

#include "mcuf/fixedpoint.h"

#define ADD_SUB_LEFT_SHIFT 20
#define RSQRT_SHIFT 20
#define LOGISTIC_INPUT_INTEGER_BITS 4
#define SOFTMAX_SCALED_DIFF_INTEGER_BITS 5

static int in_range(int32_t value, int32_t low, int32_t high) {
    return value >= low && value <= high;
}

/* QuantizeMultiplier, its result within mcuf_multiply_by_quantized_multiplier's
 * shift range [-31, 30]. */
static mcuf_status quantize(double real, int32_t *multiplier, int32_t *shift) {
    int s = 0;
    if (mcuf_quantize_multiplier(real, multiplier, &s) != MCUF_OK ||
        !in_range(s, -31, 30)) {
        return MCUF_ERR_ARGUMENT;
    }
    *shift = s;
    return MCUF_OK;
}

/* QuantizeMultiplierSmallerThanOneExp: a multiplier in (0, 1), shift <= 0. */
static mcuf_status quantize_below_one(double real, int32_t *multiplier,
                                      int32_t *shift) {
    if (!(real > 0.0 && real < 1.0)) return MCUF_ERR_ARGUMENT;
    if (quantize(real, multiplier, shift) != MCUF_OK || *shift > 0) {
        return MCUF_ERR_ARGUMENT;
    }
    return MCUF_OK;
}

/* quantization_util.cc CalculateInputRadius, total_signed_bits 31. */
static int32_t input_radius(int input_integer_bits, int input_left_shift) {
    const double max_input_rescaled =
        1.0 * (double)((1 << input_integer_bits) - 1) *
        ldexp(1.0, 31 - input_integer_bits) / ldexp(1.0, input_left_shift);
    return (int32_t)floor(max_input_rescaled);
}

mcuf_status mcuf_prepare_fully_connected(mcuf_quant input,
                                         const float *filter_scales,
                                         int32_t num_filter_scales,
                                         int32_t filter_zero_point,
                                         int per_channel, mcuf_quant output,
                                         int32_t output_depth,
                                         int32_t *multipliers, int32_t *shifts,
                                         mcuf_fc_params *params) {
    int32_t o;
    int uniform = 1;
    if (params == NULL || filter_scales == NULL || num_filter_scales < 1 ||
        output_depth < 1) {
        return MCUF_ERR_ARGUMENT;
    }
    params->input_offset = -input.zero_point;
    params->output_offset = output.zero_point;
    params->activation_min = INT8_MIN;
    params->activation_max = INT8_MAX;
    params->multipliers = NULL;
    params->shifts = NULL;
    params->weight_bits = 8; /* the glue sets 4 for an INT4 filter */
    if (!per_channel) {
        /* GetQuantizedConvolutionMultipler: double(s_in) double(s_w) / double(s_out). */
        params->weights_offset = -filter_zero_point;
        return quantize((double)input.scale * (double)filter_scales[0] /
                            (double)output.scale,
                        &params->multiplier, &params->shift);
    }
    if (num_filter_scales != 1 && num_filter_scales != output_depth) {
        return MCUF_ERR_ARGUMENT;
    }
    if (multipliers == NULL || shifts == NULL) return MCUF_ERR_ARGUMENT;
    params->weights_offset = 0;
    for (o = 0; o < output_depth; ++o) {
        const double real = (double)input.scale *
                            (double)filter_scales[o % num_filter_scales] /
                            (double)output.scale;
        if (quantize(real, &multipliers[o], &shifts[o]) != MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
        uniform = uniform && multipliers[o] == multipliers[0] &&
                  shifts[o] == shifts[0];
    }
    params->multiplier = multipliers[0];
    params->shift = shifts[0];
    if (!uniform) {
        params->multipliers = multipliers;
        params->shifts = shifts;
    }
    return MCUF_OK;
}

mcuf_status mcuf_prepare_add(mcuf_quant input1, mcuf_quant input2,
                             mcuf_quant output, mcuf_add_params *params) {
    const float max_scale =
        input1.scale > input2.scale ? input1.scale : input2.scale;
    const double twice_max_input_scale = 2.0 * (double)max_scale;
    const double real_output =
        twice_max_input_scale /
        ((double)(1 << ADD_SUB_LEFT_SHIFT) * (double)output.scale);
    if (params == NULL) return MCUF_ERR_ARGUMENT;
    params->left_shift = ADD_SUB_LEFT_SHIFT;
    params->input1_offset = -input1.zero_point;
    params->input2_offset = -input2.zero_point;
    params->output_offset = output.zero_point;
    params->activation_min = INT8_MIN;
    params->activation_max = INT8_MAX;
    if (quantize_below_one((double)input1.scale / twice_max_input_scale,
                           &params->input1_multiplier,
                           &params->input1_shift) != MCUF_OK ||
        quantize_below_one((double)input2.scale / twice_max_input_scale,
                           &params->input2_multiplier,
                           &params->input2_shift) != MCUF_OK ||
        quantize_below_one(real_output, &params->output_multiplier,
                           &params->output_shift) != MCUF_OK) {
        return MCUF_ERR_ARGUMENT;
    }
    return MCUF_OK;
}

mcuf_status mcuf_prepare_mul(mcuf_quant input1, mcuf_quant input2,
                             mcuf_quant output, mcuf_mul_params *params) {
    if (params == NULL) return MCUF_ERR_ARGUMENT;
    params->input1_offset = -input1.zero_point;
    params->input2_offset = -input2.zero_point;
    params->output_offset = output.zero_point;
    params->activation_min = INT8_MIN;
    params->activation_max = INT8_MAX;
    return quantize((double)input1.scale * (double)input2.scale /
                        (double)output.scale,
                    &params->output_multiplier, &params->output_shift);
}

mcuf_status mcuf_prepare_mean(mcuf_quant input, mcuf_quant output,
                              mcuf_mean_params *params) {
    if (params == NULL) return MCUF_ERR_ARGUMENT;
    params->input_zero_point = input.zero_point;
    params->output_zero_point = output.zero_point;
    return quantize((double)input.scale / (double)output.scale,
                    &params->multiplier, &params->shift);
}

mcuf_status mcuf_prepare_rsqrt(mcuf_quant input, mcuf_quant output,
                               mcuf_rsqrt_params *params) {
    int32_t multiplier = 0;
    int shift = 0;
    if (params == NULL || !(input.scale > 0.0f)) return MCUF_ERR_ARGUMENT;
    params->input_zero_point = input.zero_point;
    params->output_zero_point = output.zero_point;
    /* Only shift - 20 reaches mcuf_multiply_by_quantized_multiplier. */
    if (mcuf_quantize_multiplier(
            1.0 / (sqrt((double)input.scale) * (double)output.scale),
            &multiplier, &shift) != MCUF_OK ||
        !in_range(shift - RSQRT_SHIFT, -31, 30)) {
        return MCUF_ERR_ARGUMENT;
    }
    params->multiplier = multiplier;
    params->shift = shift;
    return MCUF_OK;
}

mcuf_status mcuf_prepare_logistic(mcuf_quant input, mcuf_quant output,
                                  mcuf_logistic_params *params) {
    int left_shift = 0;
    double fraction;
    double rounded;
    uint32_t bits;
    if (params == NULL || output.zero_point != -128) return MCUF_ERR_ARGUMENT;
    fraction = frexp((double)input.scale *
                         ldexp(1.0, 31 - LOGISTIC_INPUT_INTEGER_BITS),
                     &left_shift);
    /* static_cast<int32_t>(TfLiteRound(fraction * (1LL << 31))): 2^31 wraps. */
    rounded = round(fraction * 2147483648.0);
    bits = (uint32_t)(int64_t)rounded;
    params->input_zero_point = input.zero_point;
    params->input_multiplier =
        bits > (uint32_t)INT32_MAX ? (int32_t)(bits - 2147483648u) - INT32_MAX - 1
                                   : (int32_t)bits;
    params->input_left_shift = left_shift;
    params->input_range_radius =
        input_radius(LOGISTIC_INPUT_INTEGER_BITS, left_shift);
    if (params->input_range_radius > 0 && !in_range(left_shift, -31, 30)) {
        return MCUF_ERR_ARGUMENT;
    }
    return MCUF_OK;
}

mcuf_status mcuf_prepare_softmax(float beta, mcuf_quant input,
                                 mcuf_quant output,
                                 mcuf_softmax_params *params) {
    double real;
    int32_t multiplier = 0;
    int shift = 0;
    if (params == NULL || output.zero_point != -128 ||
        output.scale != 1.0f / 256.0f) {
        return MCUF_ERR_ARGUMENT;
    }
    /* PreprocessSoftmaxScaling, then QuantizeMultiplierGreaterThanOne. */
    real = (double)beta * (double)input.scale *
           ldexp(1.0, 31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS);
    if (real > (double)INT32_MAX) real = (double)INT32_MAX;
    /* The kernel shifts left by up to 31 (mcuf/int8_ops.h SOFTMAX). */
    if (!(real > 1.0) ||
        mcuf_quantize_multiplier(real, &multiplier, &shift) != MCUF_OK ||
        !in_range(shift, 0, 31)) {
        return MCUF_ERR_ARGUMENT;
    }
    params->input_multiplier = multiplier;
    params->input_left_shift = shift;
    params->diff_min = -input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, shift);
    return MCUF_OK;
}

mcuf_status mcuf_prepare_batch_matmul(mcuf_quant lhs, mcuf_quant rhs,
                                      mcuf_quant output, int rhs_transposed,
                                      mcuf_batch_matmul_params *params) {
    if (params == NULL) return MCUF_ERR_ARGUMENT;
    params->lhs_offset = -lhs.zero_point;
    params->rhs_offset = -rhs.zero_point;
    params->output_offset = output.zero_point;
    params->rhs_transposed = rhs_transposed ? 1 : 0;
    return quantize((double)lhs.scale * (double)rhs.scale / (double)output.scale,
                    &params->multiplier, &params->shift);
}
