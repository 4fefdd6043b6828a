/* MCUF_ATTENTION (see mcuf/attention.h): the block's attention half, K and V
 * in scratch, everything else one query row at a time.
 *
 * Scratch: K [h][N][hd], V transposed [h][hd][N] (so that probs·v, like
 * q·kᵀ, is one contiguous dot product per output), then three row buffers:
 * `wide` (max(D, HD)), `query` (HD) and `narrow` (max(D, N, r_qkv, r_proj)).
 *   LN(x) -> wide, its squares in narrow;
 *   qkv: dense, straight from wide; low-rank, the rank vector to narrow and
 *        the wanted columns of the second layer from there (pass 1: into K,
 *        and into query for V's column; pass 2: into query);
 *   per head: scores row -> narrow, softmax in place (its exponentials
 *        from a table of 256, made once per call on the stack: 1 KiB),
 *        context row -> its slice of wide (LN(x) is dead by then);
 *   proj: mcuf_linear_row(wide, narrow): dense output in narrow, low-rank
 *        rank vector in narrow and output back in wide;
 *   ADD(x, proj output) -> x.
 */
#include "mcuf/attention.h"

/* The qkv output columns [first, first + count) of one token, from LN(x) in
 * `normed`; a low-rank qkv puts its rank vector in `rank` first. */
static void qkv_columns(const mcuf_linear *qkv, const int8_t *normed,
                        int8_t *rank, int32_t first, int32_t count,
                        int8_t *output) {
    const mcuf_fc_layer *last = &qkv->layers[qkv->num_layers - 1];
    mcuf_fc_layer_channels(last, qkv->num_layers == 2 ? rank : normed, first,
                           count, output);
}

static void qkv_rank(const mcuf_linear *qkv, const int8_t *normed,
                     int8_t *rank) {
    if (qkv->num_layers == 2) {
        mcuf_fc_layer_channels(&qkv->layers[0], normed, 0,
                               qkv->layers[0].output_depth, rank);
    }
}

static int32_t max2(int32_t a, int32_t b) { return a > b ? a : b; }

size_t mcuf_attention_get_buffer_size(const mcuf_attention_params *params) {
    const int32_t d = params->depth;
    const int32_t hd = params->heads * params->head_dim;
    const int32_t narrow =
        max2(max2(d, params->tokens), max2(mcuf_linear_rank(&params->qkv),
                                           mcuf_linear_rank(&params->proj)));
    return 2 * (size_t)params->tokens * (size_t)hd + (size_t)max2(d, hd) +
           (size_t)hd + (size_t)narrow;
}

mcuf_status mcuf_attention(const mcuf_attention_params *params, int8_t *tokens,
                           int8_t *scratch) {
    int32_t n, d, heads, head_dim, all_heads;
    int32_t exp_table[256]; /* the softmax's exponentials, on the stack */
    int8_t *keys, *values, *wide, *query, *narrow;
    int32_t t, j, c;
    mcuf_batch_matmul_params context;
    if (params == NULL || tokens == NULL || scratch == NULL ||
        params->tokens < 1 || params->depth < 1 || params->heads < 1 ||
        params->head_dim < 1 || params->scores.rhs_transposed != 1 ||
        params->context.rhs_transposed != 0) {
        return MCUF_ERR_ARGUMENT;
    }
    n = params->tokens;
    d = params->depth;
    heads = params->heads;
    head_dim = params->head_dim;
    all_heads = heads * head_dim;
    context = params->context; /* V is stored transposed: rhs [hd][N] */
    context.rhs_transposed = 1;
    keys = scratch;
    values = keys + (int64_t)n * all_heads;
    wide = values + (int64_t)n * all_heads;
    query = wide + max2(d, all_heads);
    narrow = query + all_heads;

    /* Pass 1: K and V of every token, head-major (V through `query`). */
    for (t = 0; t < n; ++t) {
        const int8_t *x = tokens + (int64_t)t * d;
        if (mcuf_layer_norm_row(&params->ln, d, x, wide, narrow) != MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
        qkv_rank(&params->qkv, wide, narrow);
        for (j = 0; j < heads; ++j) {
            const int64_t row = ((int64_t)j * n + t) * head_dim;
            qkv_columns(&params->qkv, wide, narrow, all_heads + j * head_dim,
                        head_dim, keys + row);
            qkv_columns(&params->qkv, wide, narrow,
                        2 * all_heads + j * head_dim, head_dim, query);
            for (c = 0; c < head_dim; ++c) { /* V row t -> column t */
                values[((int64_t)j * head_dim + c) * n + t] = query[c];
            }
        }
    }

    /* Pass 2: one query row at a time, its result over its token. */
    mcuf_softmax_exp_table(&params->softmax, exp_table);
    for (t = 0; t < n; ++t) {
        int8_t *x = tokens + (int64_t)t * d;
        if (mcuf_layer_norm_row(&params->ln, d, x, wide, narrow) != MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
        qkv_rank(&params->qkv, wide, narrow);
        qkv_columns(&params->qkv, wide, narrow, 0, all_heads, query);
        for (j = 0; j < heads; ++j) {
            const int64_t head = (int64_t)j * n * head_dim;
            mcuf_batch_matmul_row(&params->scores, query + j * head_dim,
                                  head_dim, keys + head, n, narrow);
            if (mcuf_softmax_row_table(&params->softmax, exp_table, narrow, n,
                                       narrow) != MCUF_OK) {
                return MCUF_ERR_ARGUMENT;
            }
            mcuf_batch_matmul_row(&context, narrow, n, values + head,
                                  head_dim, wide + j * head_dim);
        }
        mcuf_add_row(&params->residual, x, 1,
                     mcuf_linear_row(&params->proj, wide, narrow), 1, x, d);
    }
    return MCUF_OK;
}
