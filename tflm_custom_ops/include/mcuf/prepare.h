/* TFLM's Prepare arithmetic for the builtins inside the fused blocks: from
 * the scales and zero points a .tflite stores (float32 scales) to the
 * parameter structs of mcuf/int8_ops.h, exactly as the pinned tflite-micro
 * wheel derives them.
 *
 * This mirrors mcuformer_tf.tflm_arith's prepare_* functions step for step.
 * The wheel multiplies and divides the float32 scales as doubles for SUB
 * (sub_common.cc CalculateOpDataSub, as built), the per-tensor FULLY_CONNECTED
 * and BATCH_MATMUL multiplier (kernel_util.cc GetQuantizedConvolutionMultipler)
 * and RSQRT (elementwise.cc SetRsqrtOutputMultiplier): so does this file, even
 * where the TFLM source of August 2026 (commit 90b983c2) reads a float product. Fused
 * activations are not modelled: every block builtin has none, so
 * activation ranges are [-128, 127].
 *
 * Every function returns MCUF_ERR_ARGUMENT, leaving its outputs undefined,
 * where TFLM's Prepare fails (a multiplier outside the range the TFLM
 * function requires, a LOGISTIC/SOFTMAX output not of zero point -128) or
 * where the result breaks a precondition of mcuf/int8_ops.h (shift ranges).
 */
#ifndef MCUF_PREPARE_H
#define MCUF_PREPARE_H

#include <stdint.h>

#include "mcuf/int8_ops.h"
#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One int8 tensor's quantisation: its (first) scale, as stored, and zero
 * point. */
typedef struct {
    float scale;
    int32_t zero_point;
} mcuf_quant;

/* FULLY_CONNECTED (fully_connected_common.cc CalculateOpDataFullyConnected)
 * and CONV_2D (conv_common.cc CalculateOpDataConv): per channel when
 * per_channel is nonzero (output channel o uses filter_scales[o %
 * num_filter_scales], weights offset 0), per tensor otherwise (filter
 * scale filter_scales[0], weights offset -filter_zero_point). As
 * mcuformer_tf.mcuf_kernels.fc_params: when every channel has the same
 * multiplier and shift the result is per tensor (params->multipliers NULL);
 * else multipliers/shifts [output_depth] are filled and pointed to.
 * weight_bits is 8: the caller sets 4 for packed INT4 weights. */
mcuf_status mcuf_prepare_fully_connected(mcuf_quant input,
                                         const float *filter_scales,
                                         int32_t num_filter_scales,
                                         int32_t filter_zero_point,
                                         int per_channel, mcuf_quant output,
                                         int32_t output_depth,
                                         int32_t *multipliers, int32_t *shifts,
                                         mcuf_fc_params *params);

/* ADD (add_common.cc CalculateOpDataAdd) and SUB (sub_common.cc): left
 * shift 20, input multipliers s_i / (2 max(s1, s2)), output multiplier
 * 2 max(s1, s2) / (2^20 s_out), all in double and below one. */
mcuf_status mcuf_prepare_add(mcuf_quant input1, mcuf_quant input2,
                             mcuf_quant output, mcuf_add_params *params);

/* MUL (mul_common.cc): s1 s2 / s_out. */
mcuf_status mcuf_prepare_mul(mcuf_quant input1, mcuf_quant input2,
                             mcuf_quant output, mcuf_mul_params *params);

/* MEAN (reduce_common.cc PrepareMeanOrSum): s_in / s_out. */
mcuf_status mcuf_prepare_mean(mcuf_quant input, mcuf_quant output,
                              mcuf_mean_params *params);

/* RSQRT (elementwise.cc): 1 / (sqrt(s_in) s_out), in double; the kernel
 * applies it with shift - 20. */
mcuf_status mcuf_prepare_rsqrt(mcuf_quant input, mcuf_quant output,
                               mcuf_rsqrt_params *params);

/* LOGISTIC (logistic_common.cc CalculateArithmeticOpDataLogistic): input
 * integer bits 4, output zero point -128. */
mcuf_status mcuf_prepare_logistic(mcuf_quant input, mcuf_quant output,
                                  mcuf_logistic_params *params);

/* SOFTMAX (softmax_common.cc CalculateSoftmaxParams): beta as stored
 * (float32), scaled-diff integer bits 5, output zero point -128 and scale
 * 1/256. */
mcuf_status mcuf_prepare_softmax(float beta, mcuf_quant input,
                                 mcuf_quant output,
                                 mcuf_softmax_params *params);

/* BATCH_MATMUL (batch_matmul.cc): s_lhs s_rhs / s_out; rhs_transposed is
 * adj_y. */
mcuf_status mcuf_prepare_batch_matmul(mcuf_quant lhs, mcuf_quant rhs,
                                      mcuf_quant output, int rhs_transposed,
                                      mcuf_batch_matmul_params *params);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_PREPARE_H */
