/* Row helpers shared by the fused transformer kernels (mcuf/block_ops.h). */
#include "mcuf/block_ops.h"

#include <stddef.h>

int32_t mcuf_linear_rank(const mcuf_linear *layer) {
    return layer->num_layers == 2 ? layer->layers[0].output_depth : 0;
}

void mcuf_fc_layer_channels(const mcuf_fc_layer *layer, const int8_t *input,
                            int32_t first, int32_t count, int8_t *output) {
    mcuf_fc_params params = layer->params;
    if (params.multipliers != NULL) {
        params.multipliers += first;
        params.shifts += first;
    }
    mcuf_fully_connected_row(&params, input, layer->input_depth,
                             layer->weights +
                                 (int64_t)first * layer->input_depth,
                             layer->bias != NULL ? layer->bias + first : NULL,
                             count, output);
}

static void fully_connected(const mcuf_fc_layer *layer, const int8_t *input,
                            int8_t *output) {
    mcuf_fully_connected_row(&layer->params, input, layer->input_depth,
                             layer->weights, layer->bias, layer->output_depth,
                             output);
}

int8_t *mcuf_linear_row(const mcuf_linear *layer, int8_t *input,
                        int8_t *other) {
    fully_connected(&layer->layers[0], input, other);
    if (layer->num_layers == 1) {
        return other;
    }
    fully_connected(&layer->layers[1], other, input);
    return input;
}

mcuf_status mcuf_layer_norm_row(const mcuf_layer_norm *ln, int32_t depth,
                                const int8_t *x, int8_t *out, int8_t *squares) {
    const int8_t mean = mcuf_mean_row(&ln->mean, x, depth);
    int8_t variance;
    int8_t rstd;
    mcuf_sub_row(&ln->centre, x, 1, &mean, 0, out, depth);
    mcuf_mul_row(&ln->square, out, 1, out, 1, squares, depth);
    variance = mcuf_mean_row(&ln->variance, squares, depth);
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
