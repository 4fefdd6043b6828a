/* Row helpers shared by the fused transformer kernels (mcuf/block_ops.h). */
#include "mcuf/block_ops.h"

#include <stddef.h>

#include "mcuf/dot.h"

static int linear_bound(const mcuf_linear *layer) {
    int32_t i;
    for (i = 0; i < layer->num_layers; ++i) {
        if (layer->layers[i].weights == NULL) return 0;
    }
    return 1;
}

int mcuf_block_bound(const mcuf_layer_norm *ln, const mcuf_linear *first,
                     const mcuf_linear *second) {
    return ln->epsilon != NULL && linear_bound(first) && linear_bound(second);
}

int32_t mcuf_linear_rank(const mcuf_linear *layer) {
    return layer->num_layers == 2 ? layer->layers[0].output_depth : 0;
}

void mcuf_fc_layer_tile_channels(const mcuf_fc_layer *layer,
                                 const int16_t *tile,
                                 const int32_t row_sums[MCUF_TILE],
                                 int32_t n_rows, int32_t first, int32_t count,
                                 int8_t *output, int32_t row_step,
                                 int32_t channel_step) {
    mcuf_fc_tile(&layer->params, tile, row_sums, n_rows, layer->input_depth,
                 layer->weights, layer->bias, first, count, output, row_step,
                 channel_step);
}

void mcuf_linear_tile(const mcuf_linear *layer, const int8_t *input,
                      int32_t input_step, int8_t *output, int32_t output_step,
                      int32_t n_rows, int16_t *tile) {
    int32_t row_sums[MCUF_TILE];
    int32_t i;
    for (i = 0; i < layer->num_layers; ++i) {
        const mcuf_fc_layer *fc = &layer->layers[i];
        mcuf_tile_widen(i == 0 ? input : output, i == 0 ? input_step : output_step,
                        n_rows, fc->input_depth, fc->params.input_offset,
                        fc->params.weight_bits, tile, row_sums);
        mcuf_fc_layer_tile_channels(fc, tile, row_sums, n_rows, 0,
                                    fc->output_depth, output, output_step, 1);
    }
}

void mcuf_layer_norm_tables_make(const mcuf_layer_norm *ln, int32_t depth,
                                 mcuf_layer_norm_tables *tables) {
    int32_t v;
    mcuf_add_tables(&ln->centre, tables->centre, NULL);
    mcuf_mean_fold(&ln->mean, depth, &tables->mean);
    mcuf_mean_fold(&ln->variance, depth, &tables->variance);
    for (v = -128; v <= 127; ++v) {
        tables->square[v + 128] = mcuf_mul(&ln->square, (int8_t)v, (int8_t)v);
    }
}

mcuf_status mcuf_layer_norm_row(const mcuf_layer_norm *ln,
                                const mcuf_layer_norm_tables *tables,
                                int32_t depth, const int8_t *x, int8_t *out,
                                int8_t *squares) {
    const int8_t mean = mcuf_mean_row_folded(&ln->mean, &tables->mean, x, depth);
    int8_t variance;
    int8_t rstd;
    int32_t i;
    mcuf_add_row_tables(&ln->centre, 1, tables->centre, x, 1, NULL, &mean, 0,
                        out, depth);
    for (i = 0; i < depth; ++i) {
        squares[i] = tables->square[out[i] + 128];
    }
    variance = mcuf_mean_row_folded(&ln->variance, &tables->variance, squares,
                                    depth);
    if (mcuf_rsqrt(&ln->rsqrt,
                   mcuf_add(&ln->add_epsilon, variance, *ln->epsilon),
                   &rstd) != MCUF_OK) {
        return MCUF_ERR_ARGUMENT;
    }
    mcuf_mul_row(&ln->normalize, out, 1, &rstd, 0, out, depth);
    if (ln->gamma != NULL) {
        mcuf_mul_row(&ln->scale, out, 1, ln->gamma, 1, out, depth);
    }
    if (ln->beta != NULL) {
        mcuf_add_row(&ln->offset, out, 1, ln->beta, 1, out, depth);
    }
    return MCUF_OK;
}
