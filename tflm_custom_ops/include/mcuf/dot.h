/* int8 dot products with offsets, the inner loop of every linear kernel.
 *
 * mcuf_dot_s8 returns sum_k (a[k] + a_offset)(b[k] + b_offset) modulo 2^32
 * (TFLM's int32 accumulator, wrapping); mcuf_dot_s8_x2 does it for two rows
 * a0, a1 against one b, sharing b's loads. Offsets are zero points negated,
 * so each factor lies in [-255, 255].
 *
 * On a core with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7, M33
 * with DSP) four elements at a time go through SXTAB16 (sign-extend two bytes
 * to halfwords and add the offset, exactly: the sums fit int16) and SMLAD
 * (two 16x16 products and a 32-bit accumulate, which wraps as the portable
 * uint32_t sum does), so the result is the same integer as the portable
 * loop's. Elsewhere, or with MCUF_PORTABLE defined, it is the portable C99
 * loop. The tiles below serve int8 weights and packed INT4 ones (the last
 * section: their nibbles read in registers). Private to the library's
 * kernels; inline so that short rows (a patch row of a few pixels) pay no
 * call.
 */
#ifndef MCUF_DOT_H
#define MCUF_DOT_H

#include <stdint.h>
#include <string.h>

#include "mcuf/mcuf.h"

#if defined(__ARM_FEATURE_DSP) && !defined(MCUF_PORTABLE)
#define MCUF_DOT_DSP 1
#include <arm_acle.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifdef MCUF_DOT_DSP
/* Four bytes from any address (the M7 loads unaligned words). */
static inline uint32_t mcuf_dot_load4(const int8_t *p) {
    uint32_t word;
    memcpy(&word, p, sizeof word);
    return word;
}

/* Bytes 0 and 2 of `word` sign-extended to halfwords, plus `offsets`. */
static inline int16x2_t mcuf_dot_even(int16x2_t offsets, uint32_t word) {
    return __sxtab16(offsets, (int8x4_t)word);
}

/* Bytes 1 and 3 of `word` sign-extended to halfwords, plus `offsets`:
 * SXTAB16 with its operand rotated by 8 bits, in one instruction. */
static inline int16x2_t mcuf_dot_odd(int16x2_t offsets, uint32_t word) {
    int16x2_t result;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(result) : "r"(offsets), "r"(word));
    return result;
}

static inline int16x2_t mcuf_dot_offsets(int32_t offset) {
    return (int16x2_t)(((uint32_t)offset & 0xFFFFu) * 0x00010001u);
}

/* Whether mcuf_requantize_s8 below is exact for a channel: a multiplier 0
 * or normalised (TFLM's QuantizeMultiplier gives [2^30, 2^31) or 0) and a
 * right shift of 1 to 20 (shift -1 to -20: every linear layer's and
 * BATCH_MATMUL's scale of 2^-21 to 2^-1). */
static inline int mcuf_requantize_s8_applies(int32_t multiplier,
                                             int32_t shift) {
    return (multiplier == 0 || multiplier >= (1 << 30)) && shift <= -1 &&
           shift >= -20;
}

/* What mcuf_requantize_s8 adds before its right shift: 2^(right_shift - 1)
 * (the rounding) plus offset * 2^right_shift (the output offset, which a
 * floor shift carries through exactly); below 2^28 in magnitude. */
static inline int32_t mcuf_requantize_s8_rounding(int right_shift,
                                                  int32_t offset) {
    return ((int32_t)1 << (right_shift - 1)) + offset * ((int32_t)1 << right_shift);
}

/* clamp(mcuf_requantize(x, multiplier, 0, right_shift) + offset, -128,
 * 127) in six instructions, where mcuf_requantize_s8_applies (rounding =
 * mcuf_requantize_s8_rounding(right_shift, offset)). The doubling high
 * multiply is SMMULR of 2x: (2xm + 2^31) >> 32 = floor((xm + 2^30) / 2^31),
 * exact while |x| < 2^30; beyond, QADD saturates 2x, but then |xm / 2^31|
 * >= 2^29 either way, which after a right shift of at most 20 and the
 * offset lies beyond int8 on the same side: the clamp gives the same byte.
 * RoundingDivideByPOT (ties away from zero) is floor((h + 2^(r - 1) - [h <
 * 0]) / 2^r); the high part h is within 2^30, so with the rounding added
 * no sum overflows. */
static inline int32_t mcuf_requantize_s8(int32_t x, int32_t multiplier,
                                         int right_shift, int32_t rounding) {
    int32_t high;
    __asm__("smmulr %0, %1, %2" : "=r"(high) : "r"(__qadd(x, x)), "r"(multiplier));
    return __ssat((high + (high >> 31) + rounding) >> right_shift, 8);
}
#endif

static inline uint32_t mcuf_dot_s8(const int8_t *a, int32_t a_offset,
                                   const int8_t *b, int32_t b_offset,
                                   int32_t n) {
    uint32_t acc = 0;
    int32_t k = 0;
#ifdef MCUF_DOT_DSP
    const int16x2_t ao = mcuf_dot_offsets(a_offset);
    const int16x2_t bo = mcuf_dot_offsets(b_offset);
    int32_t sum = 0;
    for (; k + 4 <= n; k += 4) {
        const uint32_t av = mcuf_dot_load4(a + k);
        const uint32_t bv = mcuf_dot_load4(b + k);
        sum = __smlad(mcuf_dot_even(ao, av), mcuf_dot_even(bo, bv), sum);
        sum = __smlad(mcuf_dot_odd(ao, av), mcuf_dot_odd(bo, bv), sum);
    }
    acc = (uint32_t)sum;
#endif
    for (; k < n; ++k) {
        acc += (uint32_t)((a[k] + a_offset) * (b[k] + b_offset));
    }
    return acc;
}

static inline void mcuf_dot_s8_x2(const int8_t *a0, const int8_t *a1,
                                  int32_t a_offset, const int8_t *b,
                                  int32_t b_offset, int32_t n,
                                  uint32_t sums[2]) {
    uint32_t acc0 = 0, acc1 = 0;
    int32_t k = 0;
#ifdef MCUF_DOT_DSP
    const int16x2_t ao = mcuf_dot_offsets(a_offset);
    const int16x2_t bo = mcuf_dot_offsets(b_offset);
    int32_t sum0 = 0, sum1 = 0;
    for (; k + 4 <= n; k += 4) {
        const uint32_t bv = mcuf_dot_load4(b + k);
        const int16x2_t b_even = mcuf_dot_even(bo, bv);
        const int16x2_t b_odd = mcuf_dot_odd(bo, bv);
        const uint32_t v0 = mcuf_dot_load4(a0 + k);
        const uint32_t v1 = mcuf_dot_load4(a1 + k);
        sum0 = __smlad(mcuf_dot_even(ao, v0), b_even, sum0);
        sum0 = __smlad(mcuf_dot_odd(ao, v0), b_odd, sum0);
        sum1 = __smlad(mcuf_dot_even(ao, v1), b_even, sum1);
        sum1 = __smlad(mcuf_dot_odd(ao, v1), b_odd, sum1);
    }
    acc0 = (uint32_t)sum0;
    acc1 = (uint32_t)sum1;
#endif
    for (; k < n; ++k) {
        const int32_t bk = b[k] + b_offset;
        acc0 += (uint32_t)((a0[k] + a_offset) * bk);
        acc1 += (uint32_t)((a1[k] + a_offset) * bk);
    }
    sums[0] = acc0;
    sums[1] = acc1;
}

/* A tile: MCUF_TILE rows of int8 values (tokens, queries, probability
 * rows), each value plus the rows' offset widened once to int16, so that
 * every weight word a linear layer loads, once sign-extended, serves all the
 * rows. Layout, for depth values a row: groups of four values k = 4g..4g+3,
 * per group per row the halfwords (x[4g], x[4g+2], x[4g+1], x[4g+3]) (the
 * order SXTAB16 gives a word's even and odd bytes in), rows one after the
 * other within a group; then the depth % 4 leftover values, per value per
 * row. MCUF_TILE * depth halfwords in all; rows past a tile's count are
 * zeros. 4-byte aligned. MCUF_TILE is in mcuf/mcuf.h. */

/* One row's groups into the int8 weights' tile (above), from `out` (tile +
 * 4 r for row r); returns the sum of the widened values. */
static inline int32_t mcuf_tile_row_s8(const int8_t *x, int32_t groups,
                                       int32_t offset, int16_t *out) {
    int32_t sum = 0;
    int32_t g;
#ifdef MCUF_DOT_DSP
    /* the row sum from the widened words: SMLAD with (1, 1) */
    const int16x2_t o = mcuf_dot_offsets(offset);
    const int16x2_t ones = mcuf_dot_offsets(1);
    uint32_t *words = (uint32_t *)(void *)out;
    for (g = 0; g < groups; ++g, words += 2 * MCUF_TILE) {
        const uint32_t v = mcuf_dot_load4(x + 4 * g);
        const int16x2_t even = mcuf_dot_even(o, v);
        const int16x2_t odd = mcuf_dot_odd(o, v);
        words[0] = (uint32_t)even;
        words[1] = (uint32_t)odd;
        sum = __smlad(odd, ones, __smlad(even, ones, sum));
    }
#else
    for (g = 0; g < groups; ++g, out += 4 * MCUF_TILE) {
        out[0] = (int16_t)(x[4 * g] + offset);
        out[1] = (int16_t)(x[4 * g + 2] + offset);
        out[2] = (int16_t)(x[4 * g + 1] + offset);
        out[3] = (int16_t)(x[4 * g + 3] + offset);
        sum += out[0] + out[1] + out[2] + out[3];
    }
#endif
    return sum;
}

#ifdef MCUF_DOT_DSP
/* One group of the inner loop below (16 MACs). */
#define MCUF_DOT_TILE_GROUP \
    "ldr %[wd], [%[wp]], #4\n\t" \
    "ldmia %[xp]!, {r8, r9, r10, r11}\n\t" \
    "sxtb16 %[we], %[wd]\n\t" \
    "sxtb16 %[wd], %[wd], ror #8\n\t" \
    "smlad %[a0], r8, %[we], %[a0]\n\t" \
    "smlad %[a0], r9, %[wd], %[a0]\n\t" \
    "smlad %[a1], r10, %[we], %[a1]\n\t" \
    "smlad %[a1], r11, %[wd], %[a1]\n\t" \
    "ldmia %[xp]!, {r8, r9, r10, r11}\n\t" \
    "smlad %[a2], r8, %[we], %[a2]\n\t" \
    "smlad %[a2], r9, %[wd], %[a2]\n\t" \
    "smlad %[a3], r10, %[we], %[a3]\n\t" \
    "smlad %[a3], r11, %[wd], %[a3]\n\t"

/* Two groups of a tile against eight weight bytes, `pairs` times: the
 * register-blocked inner loop. Per group one weight word, two SXTB16 (no
 * offset: row_sums carry it), two LDM of the four rows' halfword pairs and
 * eight SMLAD: 16 MACs in about 14 instructions. The rows' words go through
 * r8-r11 (named in the LDM, which wants its registers in order). */
static inline void mcuf_dot_tile_pairs(const uint32_t **x, const int8_t **w,
                                       int32_t pairs, int32_t acc[4]) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const uint32_t *xp = *x;
    const int8_t *wp = *w;
    const uint32_t *end = xp + 16 * pairs;
    uint32_t we, wd;
    __asm__ volatile(
        "1:\n\t"
        MCUF_DOT_TILE_GROUP MCUF_DOT_TILE_GROUP
        "cmp %[xp], %[end]\n\t"
        "bne 1b\n\t"
        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
          [xp] "+r"(xp), [wp] "+r"(wp), [we] "=&r"(we), [wd] "=&r"(wd)
        : [end] "r"(end)
        : "r8", "r9", "r10", "r11", "cc", "memory");
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    *x = xp;
    *w = wp;
}
#endif

#ifdef MCUF_DOT_DSP
/* One group (four values) of a tile against one weight word, accumulated
 * into acc: the odd group before mcuf_dot_tile_pairs. */
static inline void mcuf_dot_tile_group(const uint32_t **x, const int8_t **w,
                                       int32_t acc[4]) {
    const uint32_t *xp = *x;
    const uint32_t wv = mcuf_dot_load4(*w);
    const int16x2_t we = __sxtb16((int8x4_t)wv);
    const int16x2_t wd = mcuf_dot_odd(0, wv);
    acc[0] = __smlad((int16x2_t)xp[1], wd, __smlad((int16x2_t)xp[0], we, acc[0]));
    acc[1] = __smlad((int16x2_t)xp[3], wd, __smlad((int16x2_t)xp[2], we, acc[1]));
    acc[2] = __smlad((int16x2_t)xp[5], wd, __smlad((int16x2_t)xp[4], we, acc[2]));
    acc[3] = __smlad((int16x2_t)xp[7], wd, __smlad((int16x2_t)xp[6], we, acc[3]));
    *x = xp + 2 * MCUF_TILE;
    *w += 4;
}
#endif

#ifdef MCUF_DOT_DSP
/* acc[r] += the tile's `count` (< 4) leftover values past its groups
 * (rest, one halfword a row a value) times as many weights. */
static inline void mcuf_dot_tile_rest(const int16_t *rest, const int8_t *w,
                                      int32_t count, int32_t acc[4]) {
    int32_t k;
    for (k = 0; k < count; ++k, rest += MCUF_TILE) {
        const int32_t wk = w[k];
        acc[0] = (int32_t)((uint32_t)acc[0] + (uint32_t)(rest[0] * wk));
        acc[1] = (int32_t)((uint32_t)acc[1] + (uint32_t)(rest[1] * wk));
        acc[2] = (int32_t)((uint32_t)acc[2] + (uint32_t)(rest[2] * wk));
        acc[3] = (int32_t)((uint32_t)acc[3] + (uint32_t)(rest[3] * wk));
    }
}
#endif

/* sums[r] = init[r] + sum_k tile row r [k] * w[k] modulo 2^32, for the
 * MCUF_TILE rows of a tile of `depth` values: one weight row's dot product
 * with four rows, each weight word loaded and sign-extended once. With
 * init[r] = w_offset * row_sums[r] (+ a bias) it is the dot product with
 * w + w_offset (mcuf_tile_widen's row sums). */
static inline void mcuf_dot_tile(const int16_t *tile, const int8_t *w,
                                 int32_t depth, const uint32_t init[MCUF_TILE],
                                 uint32_t sums[MCUF_TILE]) {
    const int32_t groups = depth >> 2;
    const int16_t *rest = tile + groups * 4 * MCUF_TILE;
    const int8_t *w_rest = w + 4 * groups;
    uint32_t s0, s1, s2, s3;
    int32_t k;
#ifdef MCUF_DOT_DSP
    {
        const uint32_t *x = (const uint32_t *)(const void *)tile;
        int32_t acc[4];
        acc[0] = (int32_t)init[0];
        acc[1] = (int32_t)init[1];
        acc[2] = (int32_t)init[2];
        acc[3] = (int32_t)init[3];
        if (groups & 1) {
            mcuf_dot_tile_group(&x, &w, acc);
        }
        if (groups >> 1) {
            mcuf_dot_tile_pairs(&x, &w, groups >> 1, acc);
        }
        s0 = (uint32_t)acc[0];
        s1 = (uint32_t)acc[1];
        s2 = (uint32_t)acc[2];
        s3 = (uint32_t)acc[3];
    }
#else
    {
        const int16_t *x = tile;
        int32_t g;
        s0 = init[0];
        s1 = init[1];
        s2 = init[2];
        s3 = init[3];
        for (g = 0; g < groups; ++g, x += 4 * MCUF_TILE) {
            const int32_t w0 = w[4 * g], w1 = w[4 * g + 1];
            const int32_t w2 = w[4 * g + 2], w3 = w[4 * g + 3];
            s0 += (uint32_t)(x[0] * w0 + x[1] * w2) + (uint32_t)(x[2] * w1 + x[3] * w3);
            s1 += (uint32_t)(x[4] * w0 + x[5] * w2) + (uint32_t)(x[6] * w1 + x[7] * w3);
            s2 += (uint32_t)(x[8] * w0 + x[9] * w2) + (uint32_t)(x[10] * w1 + x[11] * w3);
            s3 += (uint32_t)(x[12] * w0 + x[13] * w2) + (uint32_t)(x[14] * w1 + x[15] * w3);
        }
    }
#endif
    for (k = 0; k < (depth & 3); ++k, rest += MCUF_TILE) {
        const int32_t wk = w_rest[k];
        s0 += (uint32_t)(rest[0] * wk);
        s1 += (uint32_t)(rest[1] * wk);
        s2 += (uint32_t)(rest[2] * wk);
        s3 += (uint32_t)(rest[3] * wk);
    }
    sums[0] = s0;
    sums[1] = s1;
    sums[2] = s2;
    sums[3] = s3;
}

/* --- packed INT4 weights ----------------------------------------------------
 *
 * TFLM's INT4 tensor holds value i of its flat array in the low nibble of
 * byte i / 2 when i is even, in the high nibble when odd, so a word loaded
 * at an even value holds values i..i+7 in its nibbles 0..7 (bits 4j..4j+3).
 * A nibble v in [-8, 7] is u - 8 with u = v XOR 8 in [0, 15]: one EOR of
 * the word with 0x88888888 turns all eight into u, and the u's of values j
 * and j + 4 land in the two halfwords of (word >> 4j) & 0x000F000F, an
 * SMLAD operand in one AND. The INT4 dot products therefore sum x u, and
 * sum x v = sum x u - 8 sum x: the caller puts the -8 in with the rows'
 * sums, as it puts a weights' offset in (weights offset - 8), and no weight
 * is unpacked to memory. The tile for INT4 weights pairs the values that
 * way: per block of eight values 8b..8b+7, per column k = 0..3, per row the
 * halfwords (x[8b + k], x[8b + k + 4]), rows one after the other within a
 * column (one LDM takes a column's four rows); then the depth % 8 leftover
 * values, per value per row. MCUF_TILE * depth halfwords, as the int8
 * tile. */

/* u = v + 8 of value i of packed INT4 `packed`. */
static inline int32_t mcuf_uint4_at(const int8_t *packed, int64_t i) {
    const uint32_t byte = (uint8_t)packed[i >> 1];
    return (int32_t)(((i & 1) ? byte >> 4 : byte & 0xFu) ^ 8u);
}

/* One row's blocks into the INT4 weights' tile (above), from `words` (word
 * r of the tile for row r); returns the sum of the widened values. */
static inline int32_t mcuf_tile_row_s4(const int8_t *x, int32_t blocks,
                                       int32_t offset, uint32_t *words) {
    int32_t sum = 0;
    int32_t b;
    for (b = 0; b < blocks; ++b, x += 8, words += 4 * MCUF_TILE) {
#ifdef MCUF_DOT_DSP
        /* (x0, x2), (x1, x3), (x4, x6), (x5, x7) by SXTAB16, paired into
         * the columns (x0, x4), (x1, x5), (x2, x6), (x3, x7) */
        const int16x2_t o = mcuf_dot_offsets(offset);
        const int16x2_t ones = mcuf_dot_offsets(1);
        const uint32_t p = mcuf_dot_load4(x), q = mcuf_dot_load4(x + 4);
        const uint32_t pe = (uint32_t)mcuf_dot_even(o, p);
        const uint32_t pd = (uint32_t)mcuf_dot_odd(o, p);
        const uint32_t qe = (uint32_t)mcuf_dot_even(o, q);
        const uint32_t qd = (uint32_t)mcuf_dot_odd(o, q);
        words[0] = (pe & 0xFFFFu) | (qe << 16);
        words[MCUF_TILE] = (pd & 0xFFFFu) | (qd << 16);
        words[2 * MCUF_TILE] = (qe & 0xFFFF0000u) | (pe >> 16);
        words[3 * MCUF_TILE] = (qd & 0xFFFF0000u) | (pd >> 16);
        sum = __smlad((int16x2_t)qd, ones,
                      __smlad((int16x2_t)qe, ones,
                              __smlad((int16x2_t)pd, ones,
                                      __smlad((int16x2_t)pe, ones, sum))));
#else
        int16_t *out = (int16_t *)(void *)words;
        int32_t k;
        for (k = 0; k < 4; ++k, out += 2 * MCUF_TILE) {
            out[0] = (int16_t)(x[k] + offset);
            out[1] = (int16_t)(x[k + 4] + offset);
            sum += out[0] + out[1];
        }
#endif
    }
    return sum;
}

/* Widens rows [n_rows] (row r at rows + r * row_step, values one apart)
 * into the tile for weights of `weight_bits` (8: the int8 weights' tile,
 * 4: the INT4 weights'), rows past n_rows zeros, and stores each row's sum
 * of its widened values in row_sums (for the weights' offset: sum x (w +
 * o) = sum x w + o sum x, modulo 2^32). 1 <= n_rows <= MCUF_TILE. */
static inline void mcuf_tile_widen(const int8_t *rows, int32_t row_step,
                                   int32_t n_rows, int32_t depth,
                                   int32_t offset, int32_t weight_bits,
                                   int16_t *tile,
                                   int32_t row_sums[MCUF_TILE]) {
    const int32_t span = weight_bits == 4 ? 8 : 4; /* a group's or block's values */
    const int32_t units = depth / span;
    uint32_t *words = (uint32_t *)(void *)tile;
    int16_t *rest = tile + units * span * MCUF_TILE;
    int32_t r, k;
    for (r = 0; r < MCUF_TILE; ++r) {
        const int8_t *x = rows + (int64_t)r * row_step;
        int32_t sum;
        if (r >= n_rows) { /* the row's span / 2 words of each unit */
            for (k = 0; k < units * span / 2; ++k) {
                words[weight_bits == 4 ? k * MCUF_TILE + r
                                       : (k >> 1) * 2 * MCUF_TILE + 2 * r + (k & 1)] = 0;
            }
            for (k = 0; k < depth - units * span; ++k) {
                rest[k * MCUF_TILE + r] = 0;
            }
            row_sums[r] = 0;
            continue;
        }
        sum = weight_bits == 4 ? mcuf_tile_row_s4(x, units, offset, words + r)
                               : mcuf_tile_row_s8(x, units, offset, tile + 4 * r);
        for (k = 0; k < depth - units * span; ++k) {
            rest[k * MCUF_TILE + r] = (int16_t)(x[units * span + k] + offset);
            sum += x[units * span + k] + offset;
        }
        row_sums[r] = sum;
    }
}

#ifdef MCUF_DOT_DSP
/* One block (eight values, 32 MACs) of the INT4 inner loop: one weight
 * word, EOR, then per column one AND, one LDM of four rows' halfword pairs
 * and four SMLAD: 26 instructions. */
#define MCUF_DOT_U4_COLUMN(and_operand) \
    "and %[op], %[mask], " and_operand "\n\t" \
    "ldmia %[xp]!, {r8, r9, r10, r11}\n\t" \
    "smlad %[a0], r8, %[op], %[a0]\n\t" \
    "smlad %[a1], r9, %[op], %[a1]\n\t" \
    "smlad %[a2], r10, %[op], %[a2]\n\t" \
    "smlad %[a3], r11, %[op], %[a3]\n\t"
#define MCUF_DOT_U4_BLOCK \
    "ldr %[wd], [%[wp]], #4\n\t" \
    "eor %[wd], %[wd], #0x88888888\n\t" \
    MCUF_DOT_U4_COLUMN("%[wd]") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #4") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #8") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #12")

/* The same block where the weights start mid-byte (the odd rows of a
 * layer of odd depth): the word at the byte whose high nibble is the first
 * value, shifted by one nibble, and the next byte's low nibble on top. */
#define MCUF_DOT_U4_BLOCK_ODD \
    "ldr %[wd], [%[wp]], #4\n\t" \
    "ldrb %[op], [%[wp]]\n\t" \
    "lsr %[wd], %[wd], #4\n\t" \
    "orr %[wd], %[wd], %[op], lsl #28\n\t" \
    "eor %[wd], %[wd], #0x88888888\n\t" \
    MCUF_DOT_U4_COLUMN("%[wd]") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #4") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #8") \
    MCUF_DOT_U4_COLUMN("%[wd], lsr #12")

/* `blocks` blocks of BLOCK (one of the two above) on a0..a3: the odd one,
 * then two a turn. The loop's end lives on the stack (LDR, CMP, BNE),
 * which leaves the registers to the accumulators, pointers, word, operand
 * and mask. */
#define MCUF_DOT_U4_BLOCKS(BLOCK) \
    do { \
        const uint32_t mask = 0x000F000Fu; \
        uint32_t wd, op; \
        if (blocks & 1) { \
            __asm__ volatile( \
                BLOCK \
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), \
                  [xp] "+r"(xp), [wp] "+r"(wp), [wd] "=&r"(wd), [op] "=&r"(op) \
                : [mask] "r"(mask) \
                : "r8", "r9", "r10", "r11", "memory"); \
        } \
        if (blocks >> 1) { \
            const uint32_t *end = xp + 32 * (blocks >> 1); \
            __asm__ volatile( \
                "1:\n\t" BLOCK BLOCK \
                "ldr %[op], %[end]\n\t" \
                "cmp %[xp], %[op]\n\t" \
                "bne 1b\n\t" \
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), \
                  [xp] "+r"(xp), [wp] "+r"(wp), [wd] "=&r"(wd), [op] "=&r"(op) \
                : [mask] "r"(mask), [end] "m"(end) \
                : "r8", "r9", "r10", "r11", "cc", "memory"); \
        } \
    } while (0)

/* acc[r] += the tile's `blocks` blocks against packed weights from value
 * `at` on, read as u: from the byte at / 2 (any alignment), mid-byte when
 * at is odd. */
static inline void mcuf_dot_tile_u4_blocks(const uint32_t *xp,
                                           const int8_t *packed, int64_t at,
                                           int32_t blocks,
                                           uint32_t acc[MCUF_TILE]) {
    int32_t a0 = (int32_t)acc[0], a1 = (int32_t)acc[1];
    int32_t a2 = (int32_t)acc[2], a3 = (int32_t)acc[3];
    const int8_t *wp = packed + (at >> 1);
    if (at & 1) {
        MCUF_DOT_U4_BLOCKS(MCUF_DOT_U4_BLOCK_ODD);
    } else {
        MCUF_DOT_U4_BLOCKS(MCUF_DOT_U4_BLOCK);
    }
    acc[0] = (uint32_t)a0;
    acc[1] = (uint32_t)a1;
    acc[2] = (uint32_t)a2;
    acc[3] = (uint32_t)a3;
}
#endif

/* acc[r] += sum_k tile row r [k] * (w[at + k] + 8) modulo 2^32: the dot
 * products of a tile widened by mcuf_tile_widen (4 bits) with `depth`
 * packed INT4 weights from value `at` on, read as u (see above: the
 * caller's init carries -8 times the rows' sums). The assembly loops on
 * the DSP path (weights starting on a byte or mid-byte), portable C
 * elsewhere. */
static inline void mcuf_dot_tile_u4(const int16_t *tile, const int8_t *packed,
                                    int64_t at, int32_t depth,
                                    uint32_t acc[MCUF_TILE]) {
    const int32_t blocks = depth >> 3;
    const int16_t *rest = tile + blocks * 8 * MCUF_TILE;
    const int64_t rest_at = at + 8 * (int64_t)blocks;
    int32_t r, k;
#ifdef MCUF_DOT_DSP
    mcuf_dot_tile_u4_blocks((const uint32_t *)(const void *)tile, packed, at,
                            blocks, acc);
#else
    {
        const int16_t *x = tile;
        int32_t b;
        for (b = 0; b < blocks; ++b) {
            const int64_t i = at + 8 * (int64_t)b;
            for (k = 0; k < 4; ++k, x += 2 * MCUF_TILE) {
                const int32_t u0 = mcuf_uint4_at(packed, i + k);
                const int32_t u1 = mcuf_uint4_at(packed, i + k + 4);
                for (r = 0; r < MCUF_TILE; ++r) {
                    acc[r] += (uint32_t)(x[2 * r] * u0 + x[2 * r + 1] * u1);
                }
            }
        }
    }
#endif
    for (k = 0; k < (depth & 7); ++k, rest += MCUF_TILE) {
        const int32_t u = mcuf_uint4_at(packed, rest_at + k);
        for (r = 0; r < MCUF_TILE; ++r) {
            acc[r] += (uint32_t)(rest[r] * u);
        }
    }
}

#ifdef __cplusplus
}
#endif

#endif /* MCUF_DOT_H */
