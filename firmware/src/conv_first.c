/* First layer: int8 input codes (pixel - 128) times weights in {-1, 0, +1}: integer
 * sums and differences, two per instruction with the Cortex-M4/M7 SMLAD (two 16x16
 * multiply-adds). Each output pixel's patch is gathered once as int16 pairs (padding
 * = pad_value), then S < threshold gives bit 1. On Cortex-M4/M7/M55 a 3x3 kernel on
 * one channel runs conv_first_m4.S instead, which reads the window from the image (or
 * from a 3x3 copy with the padding at the border). Example: 3x3x1 kernel: 9 values, 5
 * pairs, 5 SMLAD per filter. */
#include "bnn.h"
#include "model_data.h"   /* BNN_FIRST_3X3X1: the first conv is 3x3 on one channel */

uint32_t bnn_conv_first3x3_m4(const int8_t *x, int in_w, const uint32_t **w, const int32_t *t,
                              int count);

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
  const int pad = l->pad_value;
  int16_t *patch = (int16_t *)scratch;
  if (n & 1) patch[n] = 0;                            /* the odd value's partner */
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      const int iy0 = oy * l->stride_h - l->pad_top, ix0 = ox * l->stride_w - l->pad_left;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
      if (BNN_FIRST_3X3X1 || (k_h == 3 && k_w == 3 && in_c == 1)) {   /* conv_first_m4.S */
        const int8_t *x = in + iy0 * in_w + ix0;
        int stride = in_w;
        if (iy0 < 0 || ix0 < 0 || iy0 + 3 > in_h || ix0 + 3 > in_w) {  /* window + padding */
          int8_t *window = scratch;
          for (int k = 0; k < 9; ++k) {
            const int iy = iy0 + k / 3, ix = ix0 + k % 3;
            window[k] = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w ? in[iy * in_w + ix] : pad;
          }
          x = window, stride = 3;
        }
        const uint32_t *w = l->weights;
        for (int oc = 0; oc < l->out_c; oc += 32) {
          const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
          out[oc >> 5] = bnn_conv_first3x3_m4(x, stride, &w, l->thresholds + oc, count) >>
                         (32 - count);
        }
        continue;
      }
#endif
      int16_t *p = patch;
      for (int ky = 0; ky < k_h; ++ky) {
        for (int kx = 0; kx < k_w; ++kx) {
          const int iy = iy0 + ky, ix = ix0 + kx;
          const int inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
          const int8_t *x = in + (iy * in_w + ix) * in_c;
          for (int c = 0; c < in_c; ++c) *p++ = inside ? x[c] : pad;
        }
      }
      filters(scratch, pairs, l->weights, l->thresholds, l->out_c, out);
    }
  }
}
