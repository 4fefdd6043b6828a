/* The fused kernels' parameter checks (see mcuf/params_check.h).
 *
 * Each helper returns NULL, or the first field out of range spelled as the C
 * expression that reads it (the macros stringify it); the kernels' checks
 * name the member of their struct a helper looked into (MEMBER).
 */
#include "mcuf/params_check.h"

#include <stddef.h>
#include <stdint.h>

#define BYTES_MAX INT32_MAX

#define IN_RANGE(x, low, high) \
    if (!((int64_t)(x) >= (low) && (int64_t)(x) <= (high))) return #x
#define FAIL_UNLESS(condition, x) \
    if (!(condition)) return #x
#define CHECK(sub) do { const char *bad = (sub); if (bad != NULL) return bad; } while (0)
#define MEMBER(name, sub) \
    do { \
        const char *bad = (sub); \
        if (bad != NULL) { \
            error->member = name; \
            return bad; \
        } \
    } while (0)

/* An int8 tensor's zero point, and the offset -zero point TFLM stores. */
#define ZERO_POINT(x) IN_RANGE(x, -128, 127)
#define OFFSET(x) IN_RANGE(x, -127, 128)
#define SHIFT(x) IN_RANGE(x, -31, 30)
#define RIGHT_SHIFT(x) IN_RANGE(x, -31, 0)
#define MULTIPLIER(x) IN_RANGE(x, 0, INT32_MAX)
#define ACTIVATION(a) \
    IN_RANGE((a).activation_min, -128, 127); \
    IN_RANGE((a).activation_max, (a).activation_min, 127)
#define SIZE(x) IN_RANGE(x, 1, BYTES_MAX)

static const char *fc_params(const mcuf_fc_params *fc, int32_t output_depth) {
    int32_t o;
    OFFSET(fc->input_offset);
    OFFSET(fc->weights_offset);
    ZERO_POINT(fc->output_offset);
    ACTIVATION(*fc);
    MULTIPLIER(fc->multiplier);
    SHIFT(fc->shift);
    FAIL_UNLESS(fc->weight_bits == 8 || fc->weight_bits == 4, fc->weight_bits);
    if (fc->multipliers == NULL) return NULL;
    FAIL_UNLESS(fc->shifts != NULL, fc->shifts);
    for (o = 0; o < output_depth; ++o) {
        MULTIPLIER(fc->multipliers[o]);
        SHIFT(fc->shifts[o]);
    }
    return NULL;
}

static const char *fc_layer_sizes(const mcuf_fc_layer *layer,
                                  int32_t input_depth) {
    SIZE(layer->output_depth);
    IN_RANGE(layer->input_depth, input_depth, input_depth);
    IN_RANGE((int64_t)layer->output_depth * layer->input_depth, 1, BYTES_MAX);
    /* a kernel's scratch holds 4 MCUF_TILE bytes per channel of a row */
    IN_RANGE(4 * MCUF_TILE * (int64_t)layer->output_depth, 1, BYTES_MAX);
    return NULL;
}

/* in -> out channels: one layer, or a low-rank pair through its rank. Every
 * depth is checked before a per-channel array is read. */
static const char *linear(const mcuf_linear *l, int32_t in, int32_t out) {
    int32_t i;
    IN_RANGE(l->num_layers, 1, 2);
    CHECK(fc_layer_sizes(&l->layers[0], in));
    if (l->num_layers == 2) {
        CHECK(fc_layer_sizes(&l->layers[1], l->layers[0].output_depth));
    }
    IN_RANGE(l->layers[l->num_layers - 1].output_depth, out, out);
    for (i = 0; i < l->num_layers; ++i) {
        CHECK(fc_params(&l->layers[i].params, l->layers[i].output_depth));
    }
    return NULL;
}

static int64_t rank(const mcuf_linear *l) {
    return l->num_layers == 2 ? l->layers[0].output_depth : 0;
}

static const char *add_params(const mcuf_add_params *a) {
    IN_RANGE(a->left_shift, 0, 31);
    OFFSET(a->input1_offset);
    OFFSET(a->input2_offset);
    ZERO_POINT(a->output_offset);
    MULTIPLIER(a->input1_multiplier);
    MULTIPLIER(a->input2_multiplier);
    MULTIPLIER(a->output_multiplier);
    RIGHT_SHIFT(a->input1_shift);
    RIGHT_SHIFT(a->input2_shift);
    RIGHT_SHIFT(a->output_shift);
    ACTIVATION(*a);
    return NULL;
}

static const char *mul_params(const mcuf_mul_params *m) {
    OFFSET(m->input1_offset);
    OFFSET(m->input2_offset);
    ZERO_POINT(m->output_offset);
    MULTIPLIER(m->output_multiplier);
    SHIFT(m->output_shift);
    ACTIVATION(*m);
    return NULL;
}

static const char *mean_params(const mcuf_mean_params *m) {
    ZERO_POINT(m->input_zero_point);
    ZERO_POINT(m->output_zero_point);
    MULTIPLIER(m->multiplier);
    SHIFT(m->shift);
    return NULL;
}

static const char *layer_norm(const mcuf_layer_norm *ln) {
    CHECK(mean_params(&ln->mean));
    CHECK(add_params(&ln->centre));
    CHECK(mul_params(&ln->square));
    CHECK(mean_params(&ln->variance));
    CHECK(add_params(&ln->add_epsilon));
    ZERO_POINT(ln->rsqrt.input_zero_point);
    ZERO_POINT(ln->rsqrt.output_zero_point);
    MULTIPLIER(ln->rsqrt.multiplier);
    IN_RANGE(ln->rsqrt.shift, -31 + 20, 30 + 20); /* applied as shift - 20 */
    CHECK(mul_params(&ln->normalize));
    CHECK(mul_params(&ln->scale));
    return add_params(&ln->offset);
}

static const char *batch_matmul(const mcuf_batch_matmul_params *b,
                                int32_t rhs_transposed) {
    OFFSET(b->lhs_offset);
    OFFSET(b->rhs_offset);
    ZERO_POINT(b->output_offset);
    MULTIPLIER(b->multiplier);
    SHIFT(b->shift);
    IN_RANGE(b->rhs_transposed, rhs_transposed, rhs_transposed);
    return NULL;
}

static const char *mlp(const mcuf_mlp_params *p, mcuf_param_error *error) {
    SIZE(p->depth);
    SIZE(p->hidden);
    MEMBER("ln", layer_norm(&p->ln));
    MEMBER("fc1", linear(&p->fc1, p->depth, p->hidden));
    MEMBER("gelu_scale", mul_params(&p->gelu_scale));
    ZERO_POINT(p->gelu_sigmoid.input_zero_point);
    if (p->gelu_sigmoid.input_range_radius > 0) {
        SHIFT(p->gelu_sigmoid.input_left_shift);
    }
    MEMBER("gelu_gate", mul_params(&p->gelu_gate));
    MEMBER("fc2", linear(&p->fc2, p->hidden, p->depth));
    MEMBER("residual", add_params(&p->residual));
    /* scratch: 3 MCUF_TILE rows of the widest layer */
    IN_RANGE(3 * MCUF_TILE * (int64_t)p->hidden, 1, BYTES_MAX);
    IN_RANGE(3 * MCUF_TILE * (int64_t)p->depth, 1, BYTES_MAX);
    return NULL;
}

static const char *attention(const mcuf_attention_params *p,
                             mcuf_param_error *error) {
    int64_t all_heads;
    SIZE(p->tokens);
    SIZE(p->depth);
    SIZE(p->heads);
    SIZE(p->head_dim);
    all_heads = (int64_t)p->heads * p->head_dim;
    IN_RANGE(3 * all_heads, 1, BYTES_MAX);
    IN_RANGE((int64_t)p->tokens * p->depth, 1, BYTES_MAX);
    MEMBER("ln", layer_norm(&p->ln));
    MEMBER("qkv", linear(&p->qkv, p->depth, (int32_t)(3 * all_heads)));
    MEMBER("scores", batch_matmul(&p->scores, 1));
    IN_RANGE(p->softmax.input_left_shift, 0, 31);
    IN_RANGE(p->softmax.diff_min, INT32_MIN, 0);
    MEMBER("context", batch_matmul(&p->context, 0));
    MEMBER("proj", linear(&p->proj, (int32_t)all_heads, p->depth));
    /* scratch (mcuf/attention.h): K and V, 2 N HD bytes, and at most
     * 3 MCUF_TILE bytes of every row width (ranks included) */
    IN_RANGE(2 * all_heads * p->tokens +
                 3 * MCUF_TILE * ((int64_t)p->tokens + p->depth + all_heads +
                                  rank(&p->qkv) + rank(&p->proj)),
             1, BYTES_MAX);
    MEMBER("residual", add_params(&p->residual));
    return NULL;
}

static const char *patch_embed(const mcuf_patch_embed_params *p,
                               mcuf_param_error *error) {
    SIZE(p->image_height);
    SIZE(p->image_width);
    SIZE(p->channels);
    SIZE(p->patch);
    SIZE(p->depth);
    IN_RANGE(p->image_height % p->patch, 0, 0);
    IN_RANGE(p->image_width % p->patch, 0, 0);
    IN_RANGE((int64_t)p->image_height * p->image_width * p->channels, 1, BYTES_MAX);
    IN_RANGE((int64_t)p->patch * p->patch * p->channels * p->depth, 1, BYTES_MAX);
    IN_RANGE((int64_t)(p->image_height / p->patch) * (p->image_width / p->patch) *
                 p->depth, 1, BYTES_MAX);
    /* the per-channel arrays, if any, hold depth values */
    MEMBER("conv", fc_params(&p->conv, p->depth));
    MEMBER("position", add_params(&p->position));
    return NULL;
}

static mcuf_status result(const char *bad, mcuf_param_error *error) {
    error->field = bad == NULL ? NULL
                   : (bad[0] == 'p' && bad[1] == '-' && bad[2] == '>') ? bad + 3
                                                                       : bad;
    return bad == NULL ? MCUF_OK : MCUF_ERR_ARGUMENT;
}

/* The kernels' checks: `error` may be NULL (then a local one is filled). */
#define KERNEL_CHECK(check)                          \
    mcuf_param_error local = {NULL, NULL};           \
    if (error == NULL) error = &local;               \
    error->member = NULL;                            \
    return result(params == NULL ? "params" : check(params, error), error)

mcuf_status mcuf_mlp_check_params(const mcuf_mlp_params *params,
                                  mcuf_param_error *error) {
    KERNEL_CHECK(mlp);
}

mcuf_status mcuf_attention_check_params(const mcuf_attention_params *params,
                                        mcuf_param_error *error) {
    KERNEL_CHECK(attention);
}

mcuf_status mcuf_patch_embed_check_params(
    const mcuf_patch_embed_params *params, mcuf_param_error *error) {
    KERNEL_CHECK(patch_embed);
}
