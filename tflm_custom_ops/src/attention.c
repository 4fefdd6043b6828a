/* MCUF_ATTENTION (see mcuf/attention.h): the block's attention half, K and V
 * in scratch, everything else MCUF_TILE query rows at a time.
 *
 * Scratch: a tile (8 W bytes, W = max(D, HD, N, r_qkv, r_proj): the widest
 * input of any linear layer or BATCH_MATMUL, widened there, mcuf/dot.h),
 * K [h][N][hd], V transposed [h][hd][N] (so that probs·v, like q·kᵀ, is one
 * dot product per output), then MCUF_TILE rows each of `rows` (max(D, r_qkv,
 * r_proj)), `query` (HD) and `scores` (N).
 *   LN(x) -> rows (its squares in the idle tile); a low-rank qkv's rank
 *        vectors over them; then the wanted columns of qkv's last layer:
 *        pass 1 K and V (straight into their place), pass 2 Q -> query;
 *   per head j: q_j widened, scores -> scores, softmax in place (its
 *        exponentials from a table of 256), scores widened, context -> query's columns of head j (q_j
 *        is dead by then);
 *   proj: query -> rows; ADD(x, proj output) -> x.
 * On the stack, made once per call: the softmax's exponentials, the
 * LayerNorm's tables and the residual ADD's rescaled inputs, 4.25 KiB.
 * Pass 1 also keeps Q of its last tile, which pass 2 then takes first: the
 * LayerNorm and rank vectors of those rows are computed once.
 */
#include "mcuf/attention.h"

#include "mcuf/dot.h"
#include "mcuf/params_check.h"

static int32_t max2(int32_t a, int32_t b) { return a > b ? a : b; }

/* Widths of the row buffers: rows (LN, rank vectors, proj output). */
static int32_t rows_width(const mcuf_attention_params *p) {
    return max2(p->depth, max2(mcuf_linear_rank(&p->qkv),
                               mcuf_linear_rank(&p->proj)));
}

static int32_t tile_width(const mcuf_attention_params *p) {
    return max2(max2(rows_width(p), p->heads * p->head_dim), p->tokens);
}

size_t mcuf_attention_get_buffer_size(const mcuf_attention_params *params) {
    int32_t hd;
    if (mcuf_attention_check_params(params, NULL) != MCUF_OK) return 0;
    hd = params->heads * params->head_dim;
    return 2 * MCUF_TILE * (size_t)tile_width(params) +
           2 * (size_t)params->tokens * (size_t)hd +
           MCUF_TILE * ((size_t)rows_width(params) + (size_t)hd +
                        (size_t)params->tokens);
}

/* LN and (low-rank) the rank vectors of n tokens from x into rows, then
 * qkv's last layer widened in the tile: the caller takes columns. */
static mcuf_status qkv_tile(const mcuf_attention_params *p,
                            const mcuf_layer_norm_tables *ln, const int8_t *x,
                            int32_t n, int8_t *rows, int32_t width,
                            int16_t *tile, int32_t row_sums[MCUF_TILE]) {
    const mcuf_fc_layer *last = &p->qkv.layers[p->qkv.num_layers - 1];
    int32_t r;
    for (r = 0; r < n; ++r) {
        if (mcuf_layer_norm_row(&p->ln, ln, p->depth, x + r * p->depth,
                                rows + r * width, (int8_t *)tile) != MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
    }
    if (p->qkv.num_layers == 2) {
        const mcuf_fc_layer *first = &p->qkv.layers[0];
        mcuf_tile_widen(rows, width, n, first->input_depth,
                        first->params.input_offset, first->params.weight_bits,
                        tile, row_sums);
        mcuf_fc_layer_tile_channels(first, tile, row_sums, n, 0,
                                    first->output_depth, rows, width, 1);
    }
    mcuf_tile_widen(rows, width, n, last->input_depth,
                    last->params.input_offset, last->params.weight_bits, tile,
                    row_sums);
    return MCUF_OK;
}

mcuf_status mcuf_attention(const mcuf_attention_params *params, int8_t *tokens,
                           int8_t *scratch) {
    const mcuf_attention_params *p = params;
    int32_t n, d, heads, head_dim, all_heads, width, tiles, i, j, r;
    int32_t exp_table[256]; /* the softmax's exponentials, on the stack */
    mcuf_layer_norm_tables ln;
    int32_t residual_x[256], residual_y[256];
    int32_t row_sums[MCUF_TILE];
    int16_t *tile;
    int8_t *keys, *values, *rows, *query, *scores;
    const mcuf_fc_layer *last;
    if (mcuf_attention_check_params(p, NULL) != MCUF_OK || tokens == NULL ||
        scratch == NULL || ((uintptr_t)scratch & 3u) != 0 ||
        !mcuf_block_bound(&p->ln, &p->qkv, &p->proj)) {
        return MCUF_ERR_ARGUMENT;
    }
    n = p->tokens;
    d = p->depth;
    heads = p->heads;
    head_dim = p->head_dim;
    all_heads = heads * head_dim;
    width = rows_width(p);
    tiles = (n + MCUF_TILE - 1) / MCUF_TILE;
    last = &p->qkv.layers[p->qkv.num_layers - 1];
    tile = (int16_t *)(void *)scratch;
    keys = scratch + 2 * MCUF_TILE * (int64_t)tile_width(p);
    values = keys + (int64_t)n * all_heads;
    rows = values + (int64_t)n * all_heads;
    query = rows + MCUF_TILE * (int64_t)width;
    scores = query + MCUF_TILE * (int64_t)all_heads;

    mcuf_layer_norm_tables_make(&p->ln, d, &ln);
    mcuf_add_tables(&p->residual, residual_x, residual_y);

    /* Pass 1: K and V of every token, head-major; Q of the last tile. */
    for (i = 0; i < tiles; ++i) {
        const int32_t t = i * MCUF_TILE;
        const int32_t count = n - t < MCUF_TILE ? n - t : MCUF_TILE;
        if (qkv_tile(p, &ln, tokens + (int64_t)t * d, count, rows, width, tile,
                     row_sums) != MCUF_OK) {
            return MCUF_ERR_ARGUMENT;
        }
        for (j = 0; j < heads; ++j) {
            mcuf_fc_layer_tile_channels(
                last, tile, row_sums, count, all_heads + j * head_dim,
                head_dim, keys + ((int64_t)j * n + t) * head_dim, head_dim, 1);
            mcuf_fc_layer_tile_channels(
                last, tile, row_sums, count, 2 * all_heads + j * head_dim,
                head_dim, values + (int64_t)j * head_dim * n + t, 1, n);
        }
        if (i == tiles - 1) {
            mcuf_fc_layer_tile_channels(last, tile, row_sums, count, 0,
                                        all_heads, query, all_heads, 1);
        }
    }

    /* Pass 2: a tile of query rows at a time, the last tile first (its Q is
     * kept), each row's result over its token. */
    mcuf_softmax_exp_table(&p->softmax, exp_table);
    for (i = 0; i < tiles; ++i) {
        const int32_t t = (i == 0 ? tiles - 1 : i - 1) * MCUF_TILE;
        const int32_t count = n - t < MCUF_TILE ? n - t : MCUF_TILE;
        int8_t *x = tokens + (int64_t)t * d;
        if (i > 0) {
            if (qkv_tile(p, &ln, x, count, rows, width, tile, row_sums) !=
                MCUF_OK) {
                return MCUF_ERR_ARGUMENT;
            }
            mcuf_fc_layer_tile_channels(last, tile, row_sums, count, 0,
                                        all_heads, query, all_heads, 1);
        }
        for (j = 0; j < heads; ++j) {
            const int64_t head = (int64_t)j * n * head_dim;
            mcuf_tile_widen(query + j * head_dim, all_heads, count, head_dim,
                            p->scores.lhs_offset, 8, tile, row_sums);
            mcuf_batch_matmul_tile(&p->scores, tile, row_sums, count,
                                   head_dim, keys + head, n, scores, n, 1);
            for (r = 0; r < count; ++r) {
                if (mcuf_softmax_row_table(exp_table,
                                           scores + r * n, n,
                                           scores + r * n) != MCUF_OK) {
                    return MCUF_ERR_ARGUMENT;
                }
            }
            mcuf_tile_widen(scores, n, count, n, p->context.lhs_offset, 8,
                            tile, row_sums);
            mcuf_batch_matmul_tile(&p->context, tile, row_sums, count, n,
                                   values + head, head_dim,
                                   query + j * head_dim, all_heads, 1);
        }
        mcuf_linear_tile(&p->proj, query, all_heads, rows, width, count, tile);
        for (r = 0; r < count; ++r) {
            mcuf_add_row_tables(&p->residual, 0, residual_x, x + r * d, 1,
                                residual_y, rows + r * width, 1, x + r * d, d);
        }
    }
    return MCUF_OK;
}
