/* MCUF_PATCH_EMBED (see mcuf/patch_embed.h): CONV_2D (kernel = stride = P,
 * VALID) + RESHAPE + ADD(position), one patch row at a time through scratch,
 * the conv a tile of MCUF_TILE patches at a time (mcuf/dot.h).
 *
 * As in int8_ops.c, the int32 accumulator wraps as TFLM's does (uint32_t
 * arithmetic), so UBSan stays quiet and the bits are TFLM's.
 */
#include "mcuf/patch_embed.h"

#include "mcuf/dot.h"
#include "mcuf/fixedpoint.h"
#include "mcuf/params_check.h"

static int8_t clamp_int8(int32_t x, int32_t low, int32_t high) {
    return (int8_t)(x < low ? low : (x > high ? high : x));
}

/* The conv runs MCUF_TILE patches x BLOCK output channels at a time, over
 * the patch's pixels a piece (at most PIECE values of one of its P image
 * rows) at a time: the tile's pieces are widened into a tile (mcuf/dot.h)
 * once for BLOCK channels, whose accumulators stay on the stack; the
 * scratch keeps holding one patch row of tokens. Stack: PIECE x MCUF_TILE
 * halfwords and BLOCK x MCUF_TILE accumulators, 1 KiB, beside the position
 * ADD's tables (2 KiB). */
#define PIECE 64
#define BLOCK 32

/* The position ADD's rescaled inputs: conv output and position table. */
typedef struct {
    int32_t conv[256];
    int32_t position[256];
} position_tables;

/* CONV_2D's output channel o from its accumulated products (the position
 * ADD comes after, a patch row at a time). */
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
#ifdef MCUF_DOT_DSP
    if (mcuf_requantize_s8_applies(multiplier, shift) &&
        q->activation_min == -128 && q->activation_max == 127) {
        return (int8_t)mcuf_requantize_s8(
            (int32_t)acc, multiplier, (int)-shift,
            mcuf_requantize_s8_rounding((int)-shift, q->output_offset));
    }
#endif
    return clamp_int8(
        (int32_t)((uint32_t)mcuf_multiply_by_quantized_multiplier(
                      (int32_t)acc, multiplier, (int)shift) +
                  (uint32_t)q->output_offset),
        q->activation_min, q->activation_max);
}

/* acc[b] (the n_patches patches at `origin`, P C bytes apart) += channel
 * first + b's products with one piece of the patches' pixels: `length`
 * values from byte `at` of image row ky of each patch, for `count`
 * channels; the piece's sums of widened pixels go to sums[r] too (for the
 * weights' offset: conv_patches adds it once per channel); `bits`: the
 * weights' width, a constant where conv_patches calls it, so that each
 * width gets a loop of its own. */
static inline void conv_piece(const mcuf_patch_embed_params *p,
                              const int8_t *origin, int64_t row_stride,
                              int32_t n_patches, int32_t ky, int32_t at,
                              int32_t length, int32_t first, int32_t count,
                              uint32_t acc[BLOCK][MCUF_TILE],
                              uint32_t sums[MCUF_TILE], int32_t bits) {
    const int32_t segment = p->patch * p->channels; /* a patch row's bytes */
    const int64_t kernel = (int64_t)p->patch * segment;
    const int64_t at_first = first * kernel + ky * segment + at; /* value */
    uint32_t words[MCUF_TILE * PIECE / 2]; /* the tile, 4-byte aligned */
    int16_t *tile = (int16_t *)(void *)words;
    int32_t row_sums[MCUF_TILE];
    int32_t b, r;
    mcuf_tile_widen(origin + ky * row_stride + at, segment, n_patches, length,
                    p->conv.input_offset, bits, tile, row_sums);
    for (r = 0; r < MCUF_TILE; ++r) {
        sums[r] += (uint32_t)row_sums[r];
    }
    if (bits == 4) {
        int64_t w = at_first; /* a value of the packed weights */
        for (b = 0; b < count; ++b, w += kernel) {
            mcuf_dot_tile_u4(tile, p->weights, w, length, acc[b]);
        }
    } else {
        const int8_t *w = p->weights + at_first;
        for (b = 0; b < count; ++b, w += kernel) {
            mcuf_dot_tile(tile, w, length, acc[b], acc[b]);
        }
    }
}

/* The conv outputs of up to MCUF_TILE patches (n_patches, at `origin`, P C
 * bytes apart) into tokens [n_patches][D]. */
static void conv_patches(const mcuf_patch_embed_params *p, const int8_t *origin,
                         int64_t row_stride, int32_t n_patches,
                         int8_t *tokens) {
    const int32_t segment = p->patch * p->channels;
    /* the weights' offset as FC's, times each patch's sum of widened pixels;
     * INT4 nibbles read as v + 8 (mcuf/dot.h): 8 less */
    const uint32_t offset =
        (uint32_t)p->conv.weights_offset - (p->conv.weight_bits == 4 ? 8u : 0u);
    uint32_t acc[BLOCK][MCUF_TILE];
    uint32_t sums[MCUF_TILE];
    int32_t first, b, r, ky, at;
    for (first = 0; first < p->depth; first += BLOCK) {
        const int32_t count = p->depth - first < BLOCK ? p->depth - first : BLOCK;
        for (b = 0; b < count; ++b) {
            for (r = 0; r < MCUF_TILE; ++r) {
                acc[b][r] = 0;
            }
        }
        for (r = 0; r < MCUF_TILE; ++r) {
            sums[r] = 0;
        }
        for (ky = 0; ky < p->patch; ++ky) {
            for (at = 0; at < segment; at += PIECE) {
                const int32_t length = segment - at < PIECE ? segment - at : PIECE;
                if (p->conv.weight_bits == 4) {
                    conv_piece(p, origin, row_stride, n_patches, ky, at, length,
                               first, count, acc, sums, 4);
                } else {
                    conv_piece(p, origin, row_stride, n_patches, ky, at, length,
                               first, count, acc, sums, 8);
                }
            }
        }
        for (b = 0; offset != 0 && b < count; ++b) {
            for (r = 0; r < MCUF_TILE; ++r) {
                acc[b][r] += offset * sums[r];
            }
        }
        for (r = 0; r < n_patches; ++r) {
            for (b = 0; b < count; ++b) {
                tokens[(int64_t)r * p->depth + first + b] =
                    conv_output(p, acc[b][r], first + b);
            }
        }
    }
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
    if (mcuf_patch_embed_check_params(params, NULL) != MCUF_OK) return 0;
    return (size_t)(params->image_width / params->patch) *
           (size_t)params->depth;
}

ptrdiff_t mcuf_patch_embed_output_offset(
    const mcuf_patch_embed_params *params) {
    int64_t difference;
    if (mcuf_patch_embed_check_params(params, NULL) != MCUF_OK) return 0;
    difference = image_bytes(params) - token_bytes(params);
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
    position_tables tables;
    int32_t grid_w, patch_rows, row, column;
    int64_t row_stride, out_row;
    if (mcuf_patch_embed_check_params(p, NULL) != MCUF_OK || image == NULL ||
        tokens == NULL || scratch == NULL || p->weights == NULL ||
        p->position_table == NULL || !placement_ok(p, image, tokens)) {
        return MCUF_ERR_ARGUMENT;
    }
    grid_w = p->image_width / p->patch;
    patch_rows = p->image_height / p->patch;
    row_stride = (int64_t)p->image_width * p->channels;
    out_row = (int64_t)grid_w * p->depth;
    mcuf_add_tables(&p->position, tables.conv, tables.position);
    for (row = 0; row < patch_rows; ++row) {
        const int8_t *band = image + (int64_t)row * p->patch * row_stride;
        int8_t *destination = tokens + row * out_row;
        int64_t i;
        for (column = 0; column < grid_w; column += MCUF_TILE) {
            conv_patches(p, band + (int64_t)column * p->patch * p->channels,
                         row_stride,
                         grid_w - column < MCUF_TILE ? grid_w - column : MCUF_TILE,
                         scratch + (int64_t)column * p->depth);
        }
        mcuf_add_row_tables(&p->position, 0, tables.conv, scratch, 1,
                            tables.position, p->position_table + row * out_row,
                            1, scratch, (int32_t)out_row);
        for (i = 0; i < out_row; ++i) {
            destination[i] = scratch[i];
        }
    }
    return MCUF_OK;
}
