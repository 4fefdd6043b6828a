/* MCUF_MLP (see mcuf/mlp.h): the block's MLP half, MCUF_TILE tokens at a
 * time.
 *
 * Scratch: a tile (8 W bytes, W = max(D, H, r1, r2)), into which each linear
 * layer's input rows are widened (mcuf/dot.h), then MCUF_TILE rows of W
 * bytes. A tile of tokens: LN(x) of each into its row (the squares, for the
 * variance, in the idle tile), fc1 in place on the rows (every layer widens
 * its input before writing its output over it), QuickGELU through a table
 * of its 256 results, fc2 in place, and the residual ADD over the tokens.
 * On the stack, made once per call: the QuickGELU table, the LayerNorm's
 * (mcuf_layer_norm_tables) and the residual ADD's rescaled inputs, 3.5 KiB. LayerNorm and the linear layers are the
 * shared helpers of mcuf/block_ops.h.
 */
#include "mcuf/mlp.h"

#include <stdint.h>

#include "mcuf/params_check.h"

static int32_t max3(int32_t a, int32_t b, int32_t c) {
    const int32_t ab = a > b ? a : b;
    return ab > c ? ab : c;
}

/* QuickGELU of every int8 value: its output depends on its input alone, so
 * one table of 256 results (on the stack) serves every token of a call. */
static void quick_gelu_table(const mcuf_mlp_params *p, int8_t table[256]) {
    int32_t v;
    for (v = -128; v <= 127; ++v) {
        const int8_t h = (int8_t)v;
        const int8_t sigmoid = mcuf_logistic(
            &p->gelu_sigmoid, mcuf_mul(&p->gelu_scale, h, *p->gelu_coefficient));
        table[v + 128] = mcuf_mul(&p->gelu_gate, h, sigmoid);
    }
}

/* The widest row a tile of tokens holds: x, the rank vectors, h. */
static int32_t row_width(const mcuf_mlp_params *params) {
    return max3(params->depth > params->hidden ? params->depth : params->hidden,
                mcuf_linear_rank(&params->fc1), mcuf_linear_rank(&params->fc2));
}

size_t mcuf_mlp_get_buffer_size(const mcuf_mlp_params *params) {
    if (mcuf_mlp_check_params(params, NULL) != MCUF_OK) return 0;
    return (size_t)(2 * MCUF_TILE + MCUF_TILE) * (size_t)row_width(params);
}

mcuf_status mcuf_mlp(const mcuf_mlp_params *params, int8_t *tokens,
                     int32_t n_tokens, int8_t *scratch) {
    int8_t gelu[256];
    mcuf_layer_norm_tables ln;
    int32_t residual_x[256], residual_y[256];
    int16_t *tile;
    int8_t *rows;
    int32_t d, width, t, r, i;
    if (mcuf_mlp_check_params(params, NULL) != MCUF_OK || tokens == NULL ||
        scratch == NULL || n_tokens < 0 ||
        (int64_t)n_tokens * params->depth > INT32_MAX ||
        ((uintptr_t)scratch & 3u) != 0 || params->gelu_coefficient == NULL ||
        !mcuf_block_bound(&params->ln, &params->fc1, &params->fc2)) {
        return MCUF_ERR_ARGUMENT;
    }
    d = params->depth;
    width = row_width(params);
    tile = (int16_t *)(void *)scratch;
    rows = scratch + 2 * MCUF_TILE * (int64_t)width;
    quick_gelu_table(params, gelu);
    mcuf_layer_norm_tables_make(&params->ln, d, &ln);
    mcuf_add_tables(&params->residual, residual_x, residual_y);
    for (t = 0; t < n_tokens; t += MCUF_TILE) {
        const int32_t n = n_tokens - t < MCUF_TILE ? n_tokens - t : MCUF_TILE;
        int8_t *x = tokens + (int64_t)t * d;
        for (r = 0; r < n; ++r) { /* the squares go to the (idle) tile */
            if (mcuf_layer_norm_row(&params->ln, &ln, d, x + r * d,
                                    rows + r * width,
                                    (int8_t *)tile) != MCUF_OK) {
                return MCUF_ERR_ARGUMENT;
            }
        }
        mcuf_linear_tile(&params->fc1, rows, width, rows, width, n, tile);
        for (r = 0; r < n; ++r) {
            int8_t *h = rows + r * width;
            for (i = 0; i < params->hidden; ++i) {
                h[i] = (gelu + 128)[h[i]]; /* indexed by the int8 itself */
            }
        }
        mcuf_linear_tile(&params->fc2, rows, width, rows, width, n, tile);
        for (r = 0; r < n; ++r) {
            mcuf_add_row_tables(&params->residual, 0, residual_x, x + r * d, 1,
                                residual_y, rows + r * width, 1, x + r * d, d);
        }
    }
    return MCUF_OK;
}
