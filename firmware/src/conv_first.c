/* First layer: int8 input codes (pixel - 128) times weights in {-1, 0, +1}: integer
 * sums and differences, two per instruction with the Cortex-M4/M7 SMLAD (two 16x16
 * multiply-adds). Each output pixel's patch is gathered once as int16 pairs (padding
 * = pad_value), then S < threshold gives bit 1. On Cortex-M4/M7/M55 a 3x3 kernel on
 * one channel runs conv_first_m4.S instead, which reads the windows from the image (or
 * from its padded copy), a whole output row of them per call. scratch: the free half
 * of the arena (bnn.h). Example: 3x3x1 kernel: 9 values, 5 pairs, 5 SMLAD per filter. */
#include "bnn.h"
#include "model_data.h"   /* BNN_FIRST_3X3X1: the first conv is 3x3 on one channel */

/* A run of 3x3 windows for conv_first_m4.S (field order fixed: the assembly reads them
 * by offset); t_end and shift are its scratch. */
typedef struct {
  const int8_t *x;
  int in_w, step;
  const uint32_t *w;
  const int32_t *t;
  int count;
  uint32_t *out;
  int out_step, pixels;
  const int32_t *t_end;
  int shift;
} bnn_first_run;
void bnn_conv_first3x3_m4(bnn_first_run *run);

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

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
/* 3x3 kernel on one channel (conv_first_m4.S): with padding, the padded image is built
 * once in scratch (pad_value around the input); then each output row is one run of
 * windows per 32 filters. */
static void first3x3(const bnn_layer *l, const int8_t *in, uint32_t *out, int8_t *padded) {
  const int words = BNN_WORDS(l->out_c);
  const int hp = (l->out_h - 1) * l->stride_h + 3, wp = (l->out_w - 1) * l->stride_w + 3;
  const int8_t *x = in;
  int stride = l->in_w;
  if (l->pad_top || l->pad_left || hp > l->in_h || wp > l->in_w) {
    int8_t *p = padded;
    for (int y = 0; y < hp; ++y) {
      const int iy = y - l->pad_top, row = iy >= 0 && iy < l->in_h;
      const int8_t *src = in + iy * l->in_w - l->pad_left;
      for (int xp = 0; xp < wp; ++xp) {
        const int ix = xp - l->pad_left;
        *p++ = row && ix >= 0 && ix < l->in_w ? src[xp] : (int8_t)l->pad_value;
      }
    }
    x = padded, stride = wp;
  }
  for (int oy = 0; oy < l->out_h; ++oy, out += l->out_w * words) {
    bnn_first_run run = {0, stride, l->stride_w, l->weights, 0, 0, 0, 4 * words, 0, 0, 0};
    for (int oc = 0; oc < l->out_c; oc += 32) {
      run.x = x + oy * l->stride_h * stride, run.pixels = l->out_w;
      run.out = out + (oc >> 5), run.t = l->thresholds + oc;
      run.count = l->out_c - oc < 32 ? l->out_c - oc : 32;
      bnn_conv_first3x3_m4(&run);
      run.w += 5 * run.count;                     /* 5 int16 pairs per filter */
    }
  }
}
#endif

void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out, void *scratch) {
  const int words = BNN_WORDS(l->out_c);
  const int n = l->k_h * l->k_w * l->in_c, pairs = (n + 1) / 2;
  /* locals: stores through the int16 patch could alias the layer's fields */
  const int in_h = l->in_h, in_w = l->in_w, in_c = l->in_c, k_h = l->k_h, k_w = l->k_w;
  const int pad = l->pad_value;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (BNN_FIRST_3X3X1 || (k_h == 3 && k_w == 3 && in_c == 1)) {
    first3x3(l, in, out, scratch);
    return;
  }
#endif
  int16_t *patch = (int16_t *)scratch;
  if (n & 1) patch[n] = 0;                            /* the odd value's partner */
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      const int iy0 = oy * l->stride_h - l->pad_top, ix0 = ox * l->stride_w - l->pad_left;
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
