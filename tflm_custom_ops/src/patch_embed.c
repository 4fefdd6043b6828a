/* MCUF_PATCH_EMBED (see mcuf/patch_embed.h): CONV_2D (kernel = stride = P,
 * VALID) + RESHAPE + ADD(position), one patch row at a time through scratch.
 *
 * As in int8_ops.c, the int32 accumulator wraps as TFLM's does (uint32_t
 * arithmetic), so UBSan stays quiet and the bits are TFLM's.
 */
#include "mcuf/patch_embed.h"

#include "mcuf/dot.h"
#include "mcuf/fixedpoint.h"

static int8_t clamp_int8(int32_t x, int32_t low, int32_t high) {
    return (int8_t)(x < low ? low : (x > high ? high : x));
}

/* CONV_2D's accumulators for output channels o and o + 1 (count 2) or o
 * alone (count 1) at the patch whose top-left pixel is `origin` (image rows
 * `row_stride` bytes apart): one dot product per patch row. */
static void conv_sums(const mcuf_patch_embed_params *p, const int8_t *origin,
                      int64_t row_stride, int32_t o, int count,
                      uint32_t sums[2]) {
    const mcuf_fc_params *q = &p->conv;
    const int32_t segment = p->patch * p->channels; /* a patch row's bytes */
    const int64_t kernel = (int64_t)p->patch * segment;
    const int8_t *w = p->weights + (int64_t)o * kernel;
    int32_t ky;
    sums[0] = sums[1] = 0;
    for (ky = 0; ky < p->patch; ++ky) {
        const int8_t *pixels = origin + ky * row_stride;
        if (count == 2) {
            uint32_t pair[2];
            mcuf_dot_s8_x2(w, w + kernel, q->weights_offset, pixels,
                           q->input_offset, segment, pair);
            sums[0] += pair[0];
            sums[1] += pair[1];
        } else {
            sums[0] += mcuf_dot_s8(w, q->weights_offset, pixels,
                                   q->input_offset, segment);
        }
        w += segment;
    }
}

/* CONV_2D's output channel o from its accumulated products. */
static int8_t conv_output(const mcuf_patch_embed_params *p, uint32_t acc,
                          int32_t o) {
    const mcuf_fc_params *q = &p->conv;
    int32_t multiplier = q->multiplier;
    int32_t shift = q->shift;
    if (p->bias != NULL) {
        acc += (uint32_t)p->bias[o];
    }
    if (q->multipliers != NULL) {
        multiplier = q->multipliers[o];
        shift = q->shifts[o];
    }
    return clamp_int8(
        (int32_t)((uint32_t)mcuf_multiply_by_quantized_multiplier(
                      (int32_t)acc, multiplier, (int)shift) +
                  (uint32_t)q->output_offset),
        q->activation_min, q->activation_max);
}

static int64_t image_bytes(const mcuf_patch_embed_params *p) {
    return (int64_t)p->image_height * p->image_width * p->channels;
}

static int64_t token_bytes(const mcuf_patch_embed_params *p) {
    return (int64_t)(p->image_height / p->patch) * (p->image_width / p->patch) *
           p->depth;
}

size_t mcuf_patch_embed_get_buffer_size(
    const mcuf_patch_embed_params *params) {
    return (size_t)(params->image_width / params->patch) *
           (size_t)params->depth;
}

ptrdiff_t mcuf_patch_embed_output_offset(
    const mcuf_patch_embed_params *params) {
    const int64_t difference = image_bytes(params) - token_bytes(params);
    return (ptrdiff_t)(difference < 0 ? difference : 0);
}

/* Whether the tokens may be written patch row by patch row: they do not
 * overlap the image, or start at image + o with o <= L (see
 * mcuf/patch_embed.h). Addresses are compared as integers, and their
 * difference taken only where the two overlap, so it is small. */
static int placement_ok(const mcuf_patch_embed_params *p, const int8_t *image,
                        const int8_t *tokens) {
    const uintptr_t image_at = (uintptr_t)image;
    const uintptr_t tokens_at = (uintptr_t)tokens;
    const int32_t patch_rows = p->image_height / p->patch;
    const int64_t in_row = (int64_t)p->patch * p->image_width * p->channels;
    const int64_t out_row = (int64_t)(p->image_width / p->patch) * p->depth;
    int64_t offset;
    if (tokens_at >= image_at + (uintptr_t)image_bytes(p) ||
        image_at >= tokens_at + (uintptr_t)token_bytes(p) || patch_rows == 1) {
        return 1; /* no overlap, or every pixel is read before any copy */
    }
    offset = tokens_at >= image_at ? (int64_t)(tokens_at - image_at)
                                   : -(int64_t)(image_at - tokens_at);
    return offset <= (in_row >= out_row ? 1 : patch_rows - 1) *
                         (in_row - out_row);
}

mcuf_status mcuf_patch_embed(const mcuf_patch_embed_params *params,
                             const int8_t *image, int8_t *tokens,
                             int8_t *scratch) {
    const mcuf_patch_embed_params *p = params;
    int32_t grid_w, patch_rows, row, column, o;
    int64_t row_stride, out_row;
    if (p == NULL || image == NULL || tokens == NULL || scratch == NULL ||
        p->image_height < 1 || p->image_width < 1 || p->channels < 1 ||
        p->patch < 1 || p->depth < 1 || p->image_height % p->patch != 0 ||
        p->image_width % p->patch != 0 ||
        !placement_ok(p, image, tokens)) {
        return MCUF_ERR_ARGUMENT;
    }
    grid_w = p->image_width / p->patch;
    patch_rows = p->image_height / p->patch;
    row_stride = (int64_t)p->image_width * p->channels;
    out_row = (int64_t)grid_w * p->depth;
    for (row = 0; row < patch_rows; ++row) {
        const int8_t *band = image + (int64_t)row * p->patch * row_stride;
        const int8_t *position = p->position_table + row * out_row;
        int8_t *destination = tokens + row * out_row;
        int64_t i;
        for (column = 0; column < grid_w; ++column) {
            const int8_t *origin =
                band + (int64_t)column * p->patch * p->channels;
            int8_t *token = scratch + (int64_t)column * p->depth;
            const int8_t *at = position + (int64_t)column * p->depth;
            for (o = 0; o < p->depth; o += 2) {
                const int count = o + 2 <= p->depth ? 2 : 1;
                uint32_t sums[2];
                int c;
                conv_sums(p, origin, row_stride, o, count, sums);
                for (c = 0; c < count; ++c) {
                    token[o + c] = mcuf_add(&p->position,
                                            conv_output(p, sums[c], o + c),
                                            at[o + c]);
                }
            }
        }
        for (i = 0; i < out_row; ++i) {
            destination[i] = scratch[i];
        }
    }
    return MCUF_OK;
}
