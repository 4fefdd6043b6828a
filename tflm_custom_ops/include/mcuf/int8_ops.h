/* Per-row int8 primitives: exactly the integers stock TFLM's int8 kernels
 * compute, one token (one vector) at a time.
 *
 * Each op's parameter struct holds what the TFLM kernel's Prepare derives
 * (mcuformer_tf.tflm_arith's prepare_* results, field for field); the
 * functions are the kernel's Eval arithmetic, restricted to one row, so a
 * fused kernel can stream tokens and still reproduce every integer of the
 * unfused TFLM graph. Requantisation goes through mcuf/fixedpoint.h (TFLM's
 * default double rounding); the transcendental functions are gemmlowp's
 * fixed-point ones, as TFLM calls them.
 *
 * Binary elementwise ops take each operand with a step: 1 reads a row (an
 * activation row or a per-channel constant vector), 0 broadcasts one value.
 * Output may be the same buffer as an operand read with step 1 (each element
 * is read before it is written), never a step-0 one.
 *
 * Preconditions (sizes >= 1, shifts within the ranges mcuf/fixedpoint.h
 * documents) are the caller's: mcuformer_tf.mcuf_kernels checks them when it
 * builds these structs. No function allocates or uses libm.
 */
#ifndef MCUF_INT8_OPS_H
#define MCUF_INT8_OPS_H

#include <stdint.h>

#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FULLY_CONNECTED (tensorflow/lite/micro/kernels/fully_connected.cc;
 * reference/integer_ops/fully_connected.h): out[o] = clamp(zp_out +
 * requant_o(sum_k (w[o][k] + weights_offset)(x[k] + input_offset) + bias[o])).
 * Per channel (FullyConnectedPerChannel) when multipliers is not NULL,
 * per tensor (FullyConnected) with multiplier/shift otherwise.
 * weight_bits 4: the weights are TFLM's packed INT4 tensor (value i of the
 * flat [output_depth][input_depth] array in the low nibble of byte i / 2
 * when i is even, in its high nibble when odd), which stock TFLM unpacks to
 * these int8 values before the same arithmetic (mcuf/dot.h reads the
 * nibbles in registers). */
typedef struct {
    int32_t input_offset;         /* -input zero point */
    int32_t weights_offset;       /* -weights zero point; 0 per channel */
    int32_t output_offset;        /* output zero point */
    int32_t activation_min;
    int32_t activation_max;
    int32_t multiplier;           /* per tensor (multipliers == NULL) */
    int32_t shift;
    const int32_t *multipliers;   /* [output_depth], or NULL */
    const int32_t *shifts;        /* [output_depth], with multipliers */
    int32_t weight_bits;          /* 8: int8 weights; 4: packed INT4 */
} mcuf_fc_params;

/* One input row [input_depth] times weights [output_depth][input_depth]
 * (+ bias [output_depth], or NULL) -> output [output_depth]. The int32
 * accumulator wraps as TFLM's does. output must not overlap input. */
void mcuf_fully_connected_row(const mcuf_fc_params *params,
                              const int8_t *input, int32_t input_depth,
                              const int8_t *weights, const int32_t *bias,
                              int32_t output_depth, int8_t *output);

/* The same FULLY_CONNECTED for the rows of a tile (mcuf/dot.h: rows
 * widened once, input_offset added, by mcuf_tile_widen for the params'
 * weight_bits, with their row_sums): output channels [first, first +
 * count) of weights [output_depth][depth] (bias [output_depth], or NULL;
 * per-channel multipliers/shifts [output_depth]) for rows 0..n_rows-1; row
 * r's channel first + c goes to output[r * row_step + c * channel_step]. */
void mcuf_fc_tile(const mcuf_fc_params *params, const int16_t *tile,
                  const int32_t row_sums[MCUF_TILE], int32_t n_rows, int32_t depth, const int8_t *weights,
                  const int32_t *bias, int32_t first, int32_t count,
                  int8_t *output, int32_t row_step, int32_t channel_step);

/* FULLY_CONNECTED of n_rows input rows [n_rows][input_depth] through a
 * tile: rows MCUF_TILE at a time widened into `tile` (8 input_depth bytes,
 * 4-byte aligned), output [n_rows][output_depth]. The same bytes as
 * mcuf_fully_connected_row on each row. */
void mcuf_fully_connected_rows(const mcuf_fc_params *params,
                               const int8_t *input, int32_t n_rows,
                               int32_t input_depth, const int8_t *weights,
                               const int32_t *bias, int32_t output_depth,
                               int8_t *output, int16_t *tile);

/* ADD and SUB (add_common.cc, sub_common.cc; reference/integer_ops/add.h,
 * reference/sub.h): both inputs shifted left by left_shift, rescaled, summed
 * (or subtracted), rescaled to the output. Shifts are <= 0 here. */
typedef struct {
    int32_t left_shift;
    int32_t input1_offset;
    int32_t input1_multiplier;
    int32_t input1_shift;
    int32_t input2_offset;
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t activation_min;
    int32_t activation_max;
} mcuf_add_params;

int8_t mcuf_add(const mcuf_add_params *params, int8_t input1, int8_t input2);
int8_t mcuf_sub(const mcuf_add_params *params, int8_t input1, int8_t input2);
void mcuf_add_row(const mcuf_add_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size);
void mcuf_sub_row(const mcuf_add_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size);

/* An ADD/SUB whose int8 inputs go through tables: input1 / input2 [256]
 * hold, per int8 value v at [v + 128], that input's rescaled value (its
 * left shift and multiplier applied), made once by mcuf_add_tables (either
 * pointer may be NULL: not made). mcuf_add_row_tables then computes
 * mcuf_add_row (subtract 0) or mcuf_sub_row (subtract 1) with one lookup
 * per input and one requantisation per output: the same bytes.
 * input2_table may be NULL with input2_step 0: input2 is then one value,
 * rescaled once. */
void mcuf_add_tables(const mcuf_add_params *params, int32_t input1[256],
                     int32_t input2[256]);
void mcuf_add_row_tables(const mcuf_add_params *params, int subtract,
                         const int32_t input1_table[256],
                         const int8_t *input1, int32_t input1_step,
                         const int32_t input2_table[256],
                         const int8_t *input2, int32_t input2_step,
                         int8_t *output, int32_t size);

/* MUL (mul_common.cc; reference/integer_ops/mul.h):
 * clamp(zp_out + requant((x1 + offset1)(x2 + offset2))). */
typedef struct {
    int32_t input1_offset;
    int32_t input2_offset;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t activation_min;
    int32_t activation_max;
} mcuf_mul_params;

int8_t mcuf_mul(const mcuf_mul_params *params, int8_t input1, int8_t input2);
void mcuf_mul_row(const mcuf_mul_params *params,
                  const int8_t *input1, int32_t input1_step,
                  const int8_t *input2, int32_t input2_step,
                  int8_t *output, int32_t size);

/* MEAN over one row (reduce_common.cc; reference/reduce.h
 * QuantizedMeanOrSum): the multiplier and shift as Prepare stores them; the
 * 1/size factor is folded in per call, as Eval does. */
typedef struct {
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier;
    int32_t shift;
} mcuf_mean_params;

int8_t mcuf_mean_row(const mcuf_mean_params *params, const int8_t *input,
                     int32_t size);

/* The same in two steps, for many rows of one size: the multiplier and
 * shift with 1/size folded in (a 64-bit division), made once by
 * mcuf_mean_fold; then each row. */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} mcuf_mean_folded;

void mcuf_mean_fold(const mcuf_mean_params *params, int32_t size,
                    mcuf_mean_folded *folded);
int8_t mcuf_mean_row_folded(const mcuf_mean_params *params,
                            const mcuf_mean_folded *folded,
                            const int8_t *input, int32_t size);

/* RSQRT of one value (elementwise.cc RsqrtEvalQuantized, common.h
 * GetInvSqrtQuantizedMultiplierExp). MCUF_ERR_ARGUMENT (output untouched)
 * for an input below the zero point, where TFLM's Eval fails with "Rsqrt is
 * only defined for positive values". */
typedef struct {
    int32_t input_zero_point;     /* OpDataAbsRsqrt's input_offset */
    int32_t output_zero_point;
    int32_t multiplier;
    int32_t shift;
} mcuf_rsqrt_params;

mcuf_status mcuf_rsqrt(const mcuf_rsqrt_params *params, int8_t input,
                       int8_t *output);

/* LOGISTIC of one value (logistic_common.cc;
 * reference/integer_ops/logistic.h): output zero point -128, scale 1/256. */
typedef struct {
    int32_t input_zero_point;
    int32_t input_range_radius;
    int32_t input_multiplier;
    int32_t input_left_shift;
} mcuf_logistic_params;

int8_t mcuf_logistic(const mcuf_logistic_params *params, int8_t input);

/* SOFTMAX over one row (softmax_common.cc; reference/softmax.h), int8 output
 * of zero point -128 and scale 1/256. Output may be the input buffer.
 * MCUF_ERR_ARGUMENT (output untouched) where TFLM's TFLITE_CHECK on the
 * reciprocal's exponent fails (a sum of exponentials of 512 or more). */
typedef struct {
    int32_t input_multiplier;
    int32_t input_left_shift;
    int32_t diff_min;
} mcuf_softmax_params;

mcuf_status mcuf_softmax_row(const mcuf_softmax_params *params,
                             const int8_t *input, int32_t size,
                             int8_t *output);

/* The same through a table of exp(-d) for d = 0..255 (every difference an
 * int8 row can hold from its maximum; 0 below diff_min), made once by
 * mcuf_softmax_exp_table: a kernel running many rows with one params
 * computes each exponential once (mcuf_softmax_row makes one per row, 1 KiB
 * on the stack). Same results as mcuf_softmax_row. */
void mcuf_softmax_exp_table(const mcuf_softmax_params *params,
                            int32_t table[256]);
mcuf_status mcuf_softmax_row_table(const int32_t table[256],
                                   const int8_t *input, int32_t size,
                                   int8_t *output);

/* BATCH_MATMUL, one lhs row (batch_matmul.cc; reference/batch_matmul.h):
 * out[n] = clamp(zp_out + requant(sum_k (lhs[k] + lhs_offset)(rhs[k][n] +
 * rhs_offset))), rhs [depth][columns], or [columns][depth] when
 * rhs_transposed (adj_y). Output clamped to int8 (no fused activation). */
typedef struct {
    int32_t lhs_offset;
    int32_t rhs_offset;
    int32_t output_offset;
    int32_t multiplier;
    int32_t shift;
    int32_t rhs_transposed;
} mcuf_batch_matmul_params;

void mcuf_batch_matmul_row(const mcuf_batch_matmul_params *params,
                           const int8_t *lhs_row, int32_t depth,
                           const int8_t *rhs, int32_t columns,
                           int8_t *output);

/* BATCH_MATMUL with rhs rows [columns][depth] (adj_y, or V kept
 * transposed) for the lhs rows of a tile (widened with lhs_offset, as
 * mcuf_fc_tile's input): row r's column n to output[r * row_step + n *
 * column_step]. rhs_transposed is not read. */
void mcuf_batch_matmul_tile(const mcuf_batch_matmul_params *params,
                            const int16_t *tile,
                            const int32_t row_sums[MCUF_TILE], int32_t n_rows,
                            int32_t depth, const int8_t *rhs, int32_t columns,
                            int8_t *output, int32_t row_step,
                            int32_t column_step);

/* BATCH_MATMUL of n_rows lhs rows [n_rows][depth] against rhs [columns]
 * [depth] through a tile (8 depth bytes, 4-byte aligned), output
 * [n_rows][columns]: the same bytes as mcuf_batch_matmul_row with
 * rhs_transposed 1 on each row. */
void mcuf_batch_matmul_rows(const mcuf_batch_matmul_params *params,
                            const int8_t *lhs, int32_t n_rows, int32_t depth,
                            const int8_t *rhs, int32_t columns,
                            int8_t *output, int16_t *tile);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_INT8_OPS_H */
