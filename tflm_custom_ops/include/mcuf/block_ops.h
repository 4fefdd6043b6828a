/* Row helpers shared by the fused transformer kernels (MCUF_ATTENTION,
 * MCUF_MLP): a linear layer as the converter exports it (one
 * FULLY_CONNECTED, or a low-rank pair) and the LayerNorm the converter
 * decomposes into nine builtins, each on one token.
 *
 * As in mcuf/int8_ops.h, every parameter is what TFLM's Prepare derives for
 * the builtin it stands for (mcuformer_tf.mcuf_kernels fills them from the
 * .tflite), and each function computes exactly TFLM's integers for one row.
 */
#ifndef MCUF_BLOCK_OPS_H
#define MCUF_BLOCK_OPS_H

#include <stdint.h>

#include "mcuf/int8_ops.h"
#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One FULLY_CONNECTED with its constant tensors. */
typedef struct {
    mcuf_fc_params params;
    const int8_t *weights;  /* [output_depth][input_depth], packed INT4 when
                               params.weight_bits is 4 */
    const int32_t *bias;    /* [output_depth], or NULL */
    int32_t input_depth;
    int32_t output_depth;
} mcuf_fc_layer;

/* A linear layer as exported: one FULLY_CONNECTED (num_layers 1, dense) or a
 * low-rank pair (num_layers 2: layers[0] to the rank, layers[1] from it). */
typedef struct {
    int32_t num_layers;
    mcuf_fc_layer layers[2];
} mcuf_linear;

/* LayerNorm over a token's D channels, as the converter decomposes it:
 * MEAN(x), SUB(x, mean) -> c, MUL(c, c), MEAN, ADD(epsilon), RSQRT -> rstd,
 * MUL(c, rstd), MUL(gamma), ADD(beta). The converter drops MUL(gamma) where
 * gamma is all ones and ADD(beta) where beta is all zeros: NULL here. Binary
 * ops' params are in (token stream, constant) order. */
typedef struct {
    mcuf_mean_params mean;          /* MEAN(x) */
    mcuf_add_params centre;         /* SUB(x, mean) -> c */
    mcuf_mul_params square;         /* MUL(c, c) */
    mcuf_mean_params variance;      /* MEAN(c * c) */
    mcuf_add_params add_epsilon;    /* ADD(variance, epsilon) */
    const int8_t *epsilon;          /* one value */
    mcuf_rsqrt_params rsqrt;        /* RSQRT -> rstd */
    mcuf_mul_params normalize;      /* MUL(c, rstd) */
    mcuf_mul_params scale;          /* MUL(., gamma) */
    const int8_t *gamma;            /* [D], or NULL: no MUL(gamma) */
    mcuf_add_params offset;         /* ADD(., beta) */
    const int8_t *beta;             /* [D], or NULL: no ADD(beta) */
} mcuf_layer_norm;

/* What a kernel's LayerNorm computes once per call (for every token of
 * `depth` channels): the rescaled x of SUB(x, mean) per int8 value, MUL(c,
 * c) per int8 c, and both MEANs' scales with 1/depth folded in (1.25 KiB,
 * on the kernel's stack). */
typedef struct {
    int32_t centre[256];
    int8_t square[256];
    mcuf_mean_folded mean;
    mcuf_mean_folded variance;
} mcuf_layer_norm_tables;

void mcuf_layer_norm_tables_make(const mcuf_layer_norm *ln, int32_t depth,
                                 mcuf_layer_norm_tables *tables);

/* Whether a LayerNorm's epsilon and a linear layer's weights are bound (not
 * NULL), as a kernel needs before it runs: 1 or 0. */
int mcuf_block_bound(const mcuf_layer_norm *ln, const mcuf_linear *first,
                     const mcuf_linear *second);

/* r of a low-rank pair, 0 for a dense layer. */
int32_t mcuf_linear_rank(const mcuf_linear *layer);

/* Output channels [first, first + count) of one FULLY_CONNECTED on the
 * rows of a tile (widened with the layer's input_offset and for its
 * weight_bits, mcuf/dot.h): row r's channel
 * first + c to output[r * row_step + c * channel_step]. */
void mcuf_fc_layer_tile_channels(const mcuf_fc_layer *layer,
                                 const int16_t *tile,
                                 const int32_t row_sums[MCUF_TILE],
                                 int32_t n_rows, int32_t first, int32_t count,
                                 int8_t *output, int32_t row_step,
                                 int32_t channel_step);

/* The linear layer on n_rows (<= MCUF_TILE) rows at once: input rows
 * (input + r * input_step) to output rows (output + r * output_step), a
 * low-rank pair's rank vectors in the output rows first; each layer's input
 * is widened into `tile` (8 x its depth bytes, 4-byte aligned) before any
 * output is written, so output may be input (then input_step must equal
 * output_step). */
void mcuf_linear_tile(const mcuf_linear *layer, const int8_t *input,
                      int32_t input_step, int8_t *output, int32_t output_step,
                      int32_t n_rows, int16_t *tile);

/* LN(x) of one token x [depth] into out [depth]; squares [depth] is working
 * space. None of the three may overlap. tables: made by
 * mcuf_layer_norm_tables_make for ln and depth. MCUF_ERR_ARGUMENT when the variance
 * is outside RSQRT's domain, where TFLM's Eval fails too. */
mcuf_status mcuf_layer_norm_row(const mcuf_layer_norm *ln,
                                const mcuf_layer_norm_tables *tables,
                                int32_t depth, const int8_t *x, int8_t *out,
                                int8_t *squares);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_BLOCK_OPS_H */
