/* MCUF_ATTENTION: a ViT block's attention half, query row by query row, in
 * place.
 *
 * Replaces the builtin subgraph the converter emits for
 *   x + proj(MultiHeadSelfAttention(LayerNorm(x)))
 * on int8 tokens x [N][D], h heads of hd channels (HD = h * hd):
 *   LN:      the nine builtins of mcuf_layer_norm (mcuf/block_ops.h)
 *   qkv:     FULLY_CONNECTED D -> 3 HD, or two (D -> r_qkv without bias,
 *            r_qkv -> 3 HD)
 *   heads:   RESHAPE [1, N, 3, h, hd], TRANSPOSE [2, 0, 3, 1, 4], UNPACK:
 *            pure data movement, so q, k and v of head j are the qkv output
 *            columns [s HD + j hd, s HD + (j + 1) hd) for s = 0, 1, 2
 *   scores:  BATCH_MATMUL(q, k, adj_y) [h][N][N]
 *   probs:   SOFTMAX over each scores row
 *   context: BATCH_MATMUL(probs, v) [h][N][hd]
 *   merge:   TRANSPOSE [0, 2, 1, 3] and RESHAPE [N, HD] (head-major within a
 *            token; absent when h = 1, where they move nothing)
 *   proj:    FULLY_CONNECTED HD -> D, or two (HD -> r_proj, r_proj -> D)
 *   ADD(x, proj output)
 * and computes exactly the integers stock TFLM computes for it: every op but
 * the two BATCH_MATMULs and the SOFTMAX is per token, and those are per query
 * row (of one head).
 *
 * Two passes, MCUF_TILE tokens at a time (so that one weight load serves
 * them all, mcuf/dot.h). Pass 1: LN, then only the k and v columns of qkv
 * (the rank vectors first when low-rank), written to K and V in scratch,
 * K [h][N][hd], V transposed [h][hd][N]; the last tile's q columns are kept.
 * Pass 2, a tile of query rows at a time (the kept one first): LN(x_i), only
 * the q columns of qkv, per head the scores rows q_i K_j^T, their softmax,
 * the context rows probs V_j; then proj and the residual ADD, written over
 * the tokens (whose input no later row reads: pass 1 took all K and V). No
 * N x N map and no Q matrix exists at any time.
 *
 * Every binary op's params are in (token stream, other operand) order;
 * mcuformer_tf.mcuf_kernels.attention_kernel builds this struct from the
 * .tflite subgraph and checks every precondition of mcuf/int8_ops.h.
 */
#ifndef MCUF_ATTENTION_H
#define MCUF_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "mcuf/block_ops.h"
#include "mcuf/int8_ops.h"
#include "mcuf/mcuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t tokens;                   /* N */
    int32_t depth;                    /* D: channels of a token */
    int32_t heads;                    /* h */
    int32_t head_dim;                 /* hd */
    mcuf_layer_norm ln;               /* LN(x) */
    mcuf_linear qkv;                  /* D -> 3 HD: q | k | v columns */
    mcuf_batch_matmul_params scores;  /* BATCH_MATMUL(q, k): rhs_transposed 1 */
    mcuf_softmax_params softmax;      /* SOFTMAX(scores) -> probs */
    mcuf_batch_matmul_params context; /* BATCH_MATMUL(probs, v): rhs_transp 0 */
    mcuf_linear proj;                 /* HD -> D */
    mcuf_add_params residual;         /* ADD(x, proj output) */
} mcuf_attention_params;

/* Bytes of scratch mcuf_attention needs:
 *   2 MCUF_TILE max(D, HD, N, r_qkv, r_proj)   a tile of int16 rows
 * + 2 N HD                                     K [h][N][hd] and V [h][hd][N]
 * + MCUF_TILE (max(D, r_qkv, r_proj) + HD + N) a tile of rows' working set
 * (ranks 0 where a layer is dense): per row LN(x_i), the rank vectors and
 * proj's output; q_i, then the context row; the scores/probs row of one
 * head. 0 for params mcuf_attention_check_params refuses. */
size_t mcuf_attention_get_buffer_size(const mcuf_attention_params *params);

/* Runs the attention on tokens [N][D], each token's result overwriting it.
 * scratch: mcuf_attention_get_buffer_size(params) bytes, not overlapping
 * tokens, 4-byte aligned. MCUF_ERR_ARGUMENT, nothing written, for a NULL
 * pointer (gamma, beta and biases may be NULL), a misaligned scratch, or
 * params mcuf_attention_check_params refuses (mcuf/params_check.h: sizes
 * below 1, BATCH_MATMUL params whose rhs_transposed is not 1 (scores) and
 * 0 (context), ...); MCUF_ERR_ARGUMENT too where TFLM's Eval fails (a LayerNorm
 * variance outside RSQRT's domain, a softmax row whose sum of exponentials
 * reaches 512), with some rows done. */
mcuf_status mcuf_attention(const mcuf_attention_params *params, int8_t *tokens,
                           int8_t *scratch);

#ifdef __cplusplus
}
#endif

#endif /* MCUF_ATTENTION_H */
