/* MCUF_PATCH_EMBED: a ViT's patch embedding, patch row by patch row, with
 * the tokens allowed to overwrite the image they are computed from.
 *
 * Replaces the builtin subgraph the converter emits for
 *   tokens = reshape(Conv2D_P(image)) + position embedding
 * on an int8 image [H][W][C] (batch 1, NHWC):
 *   CONV_2D:  kernel = stride = P, VALID, no dilation, weights [D][P][P][C]
 *             (int8 or packed INT4, per channel or per tensor), int32 bias
 *             [D] or none
 *             -> [H/P][W/P][D]
 *   RESHAPE:  [N][D], N = (H/P)(W/P), patches in row-major order (moves no
 *             byte)
 *   ADD(tokens, position table [N][D], a constant)
 * and computes exactly the integers stock TFLM computes for it: each output
 * pixel of CONV_2D is reference/integer_ops/conv.h's sum over its own patch
 * (no padding, no overlap), requantised per output channel, then the ADD.
 * No im2col in the arena: a tile of patches is widened a piece of one image
 * row at a time on the stack (1 KiB with the accumulators; 3 KiB with the
 * ADD's tables).
 *
 * Memory. One patch row (P image rows, R_in = P W C bytes) gives W/P tokens
 * (R_out = (W/P) D bytes); they are computed into scratch and only then
 * copied to the output, so the output may share memory with the image: the
 * copy of patch row r (to output bytes [r R_out, (r + 1) R_out)) happens
 * after image bytes [0, (r + 1) R_in) are consumed and must spare the rest.
 * With the output at image + o (o in bytes, possibly negative), that is
 *   o <= (r + 1)(R_in - R_out)   for every patch row r but the last,
 * i.e. o <= L = R_in - R_out when R_in >= R_out, L = (H/P - 1)(R_in - R_out)
 * otherwise (no bound with one patch row). The union of image and output is
 * smallest, max(H W C, N D) bytes, at o = min(0, H W C - N D):
 * mcuf_patch_embed_output_offset. So when the tokens need more bytes than
 * the image they end where the image ends (o = H W C - N D <= 0), and
 * otherwise they start where it starts (o = 0). A memory planner places the
 * image at offset a and the tokens at a + o, both inside one buffer of
 * max(H W C, N D) bytes starting at a + min(0, o).
 *
 * mcuformer_tf.mcuf_kernels.patch_embed_kernel builds this struct from the
 * .tflite subgraph and checks every precondition of mcuf/int8_ops.h.
 */
#ifndef MCUF_PATCH_EMBED_H
#define MCUF_PATCH_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "mcuf/int8_ops.h"
#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t image_height;  /* H, a multiple of P */
    int32_t image_width;   /* W, a multiple of P */
    int32_t channels;      /* C */
    int32_t patch;         /* P */
    int32_t depth;         /* D: the conv's output channels */
    /* CONV_2D's offsets, activation range and per-channel (multipliers not
     * NULL) or per-tensor requantisation, with mcuf_fc_params' meaning;
     * weights_offset 0, as TFLM's ConvPerChannel ignores the weights' zero
     * point. */
    mcuf_fc_params conv;
    const int8_t *weights;         /* [D][P][P][C]; packed INT4 when
                                      conv.weight_bits is 4 */
    const int32_t *bias;           /* [D], or NULL */
    mcuf_add_params position;      /* ADD(conv tokens, position table) */
    const int8_t *position_table;  /* [N][D] */
} mcuf_patch_embed_params;

/* Bytes of scratch mcuf_patch_embed needs: one patch row of tokens,
 * (W / P) D; 0 for params mcuf_patch_embed_check_params refuses (as is the
 * offset below). */
size_t mcuf_patch_embed_get_buffer_size(const mcuf_patch_embed_params *params);

/* Where the tokens go when they share memory with the image: their byte
 * offset from the image's start, min(0, H W C - N D) (see above). */
ptrdiff_t mcuf_patch_embed_output_offset(
    const mcuf_patch_embed_params *params);

/* Embeds image [H][W][C] into tokens [N][D]. tokens either do not overlap
 * the image or start at image + o with o <= L (see above; the
 * mcuf_patch_embed_output_offset placement is one such); the image's bytes
 * are undefined afterwards where they overlap. scratch:
 * mcuf_patch_embed_get_buffer_size(params) bytes, overlapping neither.
 * MCUF_ERR_ARGUMENT, nothing written, for a NULL pointer (bias may be NULL),
 * params mcuf_patch_embed_check_params refuses (mcuf/params_check.h: sizes
 * below 1, an image not a whole number of patches, ...), or tokens
 * overlapping the image otherwise. */
mcuf_status mcuf_patch_embed(const mcuf_patch_embed_params *params,
                             const int8_t *image, int8_t *tokens,
                             int8_t *scratch);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_PATCH_EMBED_H */
