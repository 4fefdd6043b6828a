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
 * loop. Private to the library's kernels; inline so that short rows (a
 * patch row of a few pixels) pay no call.
 */
#ifndef MCUF_DOT_H
#define MCUF_DOT_H

#include <stdint.h>
#include <string.h>

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

#ifdef __cplusplus
}
#endif

#endif /* MCUF_DOT_H */
