/* MCUF_MLP (see mcuf/mlp.h): the block's MLP half, streamed token by token.
 *
 * Scratch is two buffers, wide (max(H, D) bytes) and narrow (max(D, r1, r2)
 * bytes). A linear layer reads one buffer and writes the other; a low-rank
 * pair writes its rank vector to the other buffer and its output back over
 * its (by then dead) input. So the LayerNorm output goes to the buffer that
 * makes fc1's output land in wide: narrow when fc1 is dense, wide when it is
 * low-rank (its squares, for the variance, to the other one). fc2 reads wide,
 * so its output lands in narrow (dense) or wide (low-rank), and the residual
 * ADD writes over the token. QuickGELU goes through a table of its 256
 * results, made once per call on the stack (256 bytes). LayerNorm and the
 * linear layers are the shared helpers of mcuf/block_ops.h.
 */
#include "mcuf/mlp.h"

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

/* QuickGELU in place on h ([H]), through the table. */
static void quick_gelu(const mcuf_mlp_params *p, const int8_t table[256],
                       int8_t *h) {
    int32_t i;
    for (i = 0; i < p->hidden; ++i) {
        h[i] = table[h[i] + 128];
    }
}

size_t mcuf_mlp_get_buffer_size(const mcuf_mlp_params *params) {
    const int32_t d = params->depth;
    const int32_t wide = params->hidden > d ? params->hidden : d;
    return (size_t)wide + (size_t)max3(d, mcuf_linear_rank(&params->fc1),
                                       mcuf_linear_rank(&params->fc2));
}

mcuf_status mcuf_mlp(const mcuf_mlp_params *params, int8_t *tokens,
                     int32_t n_tokens, int8_t *scratch) {
    int8_t gelu[256];
    int8_t *wide = scratch;
    int8_t *narrow;
    int8_t *normed;
    int8_t *other;
    int32_t d;
    int32_t t;
    if (params == NULL || tokens == NULL || scratch == NULL || n_tokens < 0) {
        return MCUF_ERR_ARGUMENT;
    }
    d = params->depth;
    narrow = scratch + (params->hidden > d ? params->hidden : d);
    normed = params->fc1.num_layers == 1 ? narrow : wide;
    other = normed == wide ? narrow : wide;
    quick_gelu_table(params, gelu);
    for (t = 0; t < n_tokens; ++t) {
        int8_t *x = tokens + (int64_t)t * d;
        int8_t *h;
        if (mcuf_layer_norm_row(&params->ln, d, x, normed, other) !=
            MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
        h = mcuf_linear_row(&params->fc1, normed, other); /* always wide */
        quick_gelu(params, gelu, h);
        mcuf_add_row(&params->residual, x, 1,
                     mcuf_linear_row(&params->fc2, h, narrow), 1, x, d);
    }
    return MCUF_OK;
}
