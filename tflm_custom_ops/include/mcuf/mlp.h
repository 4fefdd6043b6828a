/* MCUF_MLP: a ViT block's MLP half, one token at a time, in place.
 *
 * Replaces the builtin subgraph the converter emits for
 *   x + fc2(QuickGELU(fc1(LayerNorm(x))))
 * on int8 tokens x [N][D]:
 *   LN:   MEAN(x), SUB(x, mean), MUL(c, c), MEAN, ADD(epsilon), RSQRT,
 *         MUL(c, rstd), MUL(gamma), ADD(beta) (the converter drops MUL(gamma)
 *         where gamma is all ones and ADD(beta) where beta is all zeros)
 *   fc1:  FULLY_CONNECTED D -> H, or two (D -> r1 without bias, r1 -> H)
 *   GELU: MUL(h, 1.702), LOGISTIC, MUL(h, sigmoid)
 *   fc2:  FULLY_CONNECTED H -> D, or two (H -> r2, r2 -> D)
 *   ADD(x, fc2 output)
 * and computes exactly the integers stock TFLM computes for it (every op is
 * per token), writing each token's result over that token, MCUF_TILE tokens
 * at a time. Scratch holds a tile of tokens' working set, never an N x H
 * activation.
 *
 * Every binary op's params are in (token stream, other operand) order;
 * mcuformer_tf.mcuf_kernels.mlp_kernel builds this struct from the .tflite
 * subgraph (swapping ADD/MUL operands where the converter put the constant
 * first) and checks every precondition of mcuf/int8_ops.h.
 */
#ifndef MCUF_MLP_H
#define MCUF_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "mcuf/block_ops.h"
#include "mcuf/int8_ops.h"
#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t depth;   /* D: channels of a token */
    int32_t hidden;  /* H: fc1's output channels */
    mcuf_layer_norm ln;                /* LN(x) */
    mcuf_linear fc1;                   /* D -> H */
    /* QuickGELU, h * sigmoid(1.702 h) */
    mcuf_mul_params gelu_scale;        /* MUL(h, coefficient) */
    const int8_t *gelu_coefficient;    /* one value */
    mcuf_logistic_params gelu_sigmoid; /* LOGISTIC */
    mcuf_mul_params gelu_gate;         /* MUL(h, sigmoid) */
    mcuf_linear fc2;                   /* H -> D */
    mcuf_add_params residual;          /* ADD(x, fc2 output) */
} mcuf_mlp_params;

/* Bytes of scratch mcuf_mlp needs: 3 MCUF_TILE W (= 12 W), W = max(D, H,
 * r1, r2), ranks 0 where a layer is dense (W = H for every exported ViT):
 * a tile of int16 rows (2 MCUF_TILE W) and MCUF_TILE int8 rows of W.
 * Independent of the number of tokens; 0 for params mcuf_mlp_check_params
 * refuses. */
size_t mcuf_mlp_get_buffer_size(const mcuf_mlp_params *params);

/* Runs the MLP on tokens [n_tokens][D], each token's result overwriting it.
 * scratch: mcuf_mlp_get_buffer_size(params) bytes, 4-byte aligned, not
 * overlapping tokens. MCUF_ERR_ARGUMENT for a NULL pointer (gamma, beta
 * and biases may be NULL), params mcuf_mlp_check_params refuses
 * (mcuf/params_check.h), a negative n_tokens, n_tokens D above INT32_MAX or
 * a misaligned scratch (nothing written), or when a token's
 * LayerNorm variance is outside RSQRT's domain, where TFLM's Eval fails too
 * (the tiles before it are done). */
mcuf_status mcuf_mlp(const mcuf_mlp_params *params, int8_t *tokens,
                     int32_t n_tokens, int8_t *scratch);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_MLP_H */
