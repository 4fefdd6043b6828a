/* Whether a fused kernel's parameter struct is one the kernel can run
 * safely: every field within the range the kernels' arithmetic and buffers
 * need, whoever filled it (the TFLM glue's Prepare, Python's ctypes, or a
 * caller of its own).
 *
 * Each check returns MCUF_OK or MCUF_ERR_ARGUMENT and, when `error` is not
 * NULL, names the first field found out of range there (both NULL when
 * none): the member of the kernel's struct it is in (e.g. "fc1"; NULL for
 * the struct's own fields) and the field as the C expression that read it
 * (e.g. "layer->params.shift", "tokens"). Checked: sizes >= 1 and
 * every byte count they imply (tokens, weights, scratch, image) at most
 * INT32_MAX; each linear layer chain's depths (the block's D in, its width
 * out, a low-rank pair's rank between); zero points and offsets of int8
 * tensors, activation ranges within int8, non-negative multipliers, shifts
 * within mcuf/fixedpoint.h's ranges (per-channel ones too: their arrays must
 * hold output_depth values), weight widths of 8 or 4 bits. Data pointers (weights, constants) are not:
 * the kernels check those for NULL when they run, as TFLM binds them only in
 * Eval; *_get_buffer_size returns 0 for a struct its check refuses.
 */
#ifndef MCUF_PARAMS_CHECK_H
#define MCUF_PARAMS_CHECK_H

#include "mcuf/attention.h"
#include "mcuf/mcuf.h"
#include "mcuf/mlp.h"
#include "mcuf/patch_embed.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *member; /* "fc1", "ln", ...; NULL: a field of the struct */
    const char *field;  /* the field out of range, NULL when none */
} mcuf_param_error;

mcuf_status mcuf_mlp_check_params(const mcuf_mlp_params *params,
                                  mcuf_param_error *error);
mcuf_status mcuf_attention_check_params(const mcuf_attention_params *params,
                                        mcuf_param_error *error);
mcuf_status mcuf_patch_embed_check_params(
    const mcuf_patch_embed_params *params, mcuf_param_error *error);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_PARAMS_CHECK_H */
