/* First layer: int8 input codes (pixel - 128) times weights in {-1, 0, +1}: integer
 * sums and differences, two per instruction with the Cortex-M4/M7 SMLAD (two 16x16
 * multiply-adds). Each output pixel's patch is gathered once as int16 pairs (padding
 * = pad_value), then S < threshold gives bit 1. On Cortex-M4/M7/M55 the 3x3 grayscale
 * kernel runs conv_first_m4.S (the patch in registers; also on the M55). Example: 3x3x1 kernel: 9
 * values, 5 pairs, 5 SMLAD per filter. */
#include "bnn.h"

uint32_t bnn_conv_first5_m4(const uint32_t *patch, const uint32_t **w, const int32_t *t, int count);

#if defined(__ARM_FEATURE_SIMD32) && !defined(__ARM_FEATURE_MVE)
#include <arm_acle.h>
#define SMLAD(a, b, acc) __smlad((int32_t)(a), (int32_t)(b), (acc))
#else
/* acc + lo(a) * lo(b) + hi(a) * hi(b), 16-bit halves (what SMLAD computes) */
#define SMLAD(a, b, acc) \
  ((acc) + (int16_t)(a) * (int16_t)(b) + (int16_t)((a) >> 16) * (int16_t)((b) >> 16))
#endif

/* Packs filter oc's output bit: 1 (= -1) iff s < t, the sign of s - t. */
static inline void put_bit(uint32_t *word, uint32_t *out, int oc, int out_c, int32_t s, int32_t t) {
  *word = (*word >> 1) | ((uint32_t)(s - t) & 0x80000000u);
  if ((oc & 31) == 31) {
    out[oc >> 5] = *word;
  } else if (oc + 1 == out_c) {
    out[oc >> 5] = *word >> (31 - (oc & 31));
  }
}

#ifdef __ARM_FEATURE_MVE
#include <arm_mve.h>

/* All filters over a patch of `pairs` int16 pairs, Cortex-M55: eight int16 products
 * per VMLADAVA, the last vector of a filter predicated with VCTP. */
static void filters(const uint32_t *patch, int pairs, const uint32_t *w, const int32_t *t,
                    int out_c, uint32_t *out) {
  const int n = 2 * pairs;
  const int16_t *x = (const int16_t *)patch;
  uint32_t word = 0;
  for (int oc = 0; oc < out_c; ++oc, w += pairs) {
    const int16_t *f = (const int16_t *)w;
    int32_t s = 0;
    for (int k = 0; k < n; k += 8) {
      const mve_pred16_t in_filter = vctp16q((uint32_t)(n - k));
      s = vmladavaq_s16(s, vldrhq_z_s16(x + k, in_filter), vldrhq_z_s16(f + k, in_filter));
    }
    put_bit(&word, out, oc, out_c, s, t[oc]);
  }
}
#else
/* All filters over a patch of `pairs` int16 pairs. */
static void filters(const uint32_t *patch, int pairs, const uint32_t *w, const int32_t *t,
                    int out_c, uint32_t *out) {
  uint32_t word = 0;
  for (int oc = 0; oc < out_c; ++oc, w += pairs) {
    int32_t s = 0;
    for (int k = 0; k < pairs; ++k) s = SMLAD(patch[k], w[k], s);
    put_bit(&word, out, oc, out_c, s, t[oc]);
  }
}
#endif

void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out, void *scratch) {
  const int words = BNN_WORDS(l->out_c);
  const int n = l->k_h * l->k_w * l->in_c, pairs = (n + 1) / 2;
  /* locals: stores through the int16 patch could alias the layer's fields */
  const int in_h = l->in_h, in_w = l->in_w, in_c = l->in_c, k_h = l->k_h, k_w = l->k_w;
  const int run = k_w * in_c, pad = l->pad_value;
  int16_t *patch = (int16_t *)scratch;
  if (n & 1) patch[n] = 0;                            /* the odd value's partner */
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      int16_t *p = patch;
      const int iy0 = oy * l->stride_h - l->pad_top, ix0 = ox * l->stride_w - l->pad_left;
      for (int iy = iy0; iy < iy0 + k_h; ++iy) {
        const int8_t *x = in + (iy * in_w + ix0) * in_c;
        if (iy >= 0 && iy < in_h && ix0 >= 0 && ix0 + k_w <= in_w) {
          if (run == 3) {                                     /* 3x3 grayscale */
            p[0] = x[0], p[1] = x[1], p[2] = x[2], p += 3;
          } else {
            for (int k = 0; k < run; ++k) *p++ = x[k];        /* the row inside */
          }
        } else {
          for (int k = 0; k < run; ++k) {
            const int ix = ix0 + k / in_c;
            *p++ = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w ? x[k] : pad;
          }
        }
      }
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
      if (pairs == 5) {                               /* 3x3 grayscale: conv_first_m4.S */
        const uint32_t *w = l->weights;
        for (int oc = 0; oc < l->out_c; oc += 32) {
          const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
          out[oc >> 5] = bnn_conv_first5_m4(scratch, &w, l->thresholds + oc, count) >> (32 - count);
        }
        continue;
      }
#endif
      filters(scratch, pairs, l->weights, l->thresholds, l->out_c, out);
    }
  }
}
