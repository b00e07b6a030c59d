/* Gathers an output pixel's input patch into one bit stream (bit tap * in_c + c,
 * zero words up to a multiple of 3), the layout of the filters (bnn.h). With in_c a
 * multiple of 32 this copies words; otherwise each tap's bits are shifted in after
 * the previous tap's (compiled only for models that need it: BNN_PACKED_TAPS or
 * BNN_SPARSE in model_data.h). Example, 16 channels, 3x3 kernel: 144 bits, 5 words
 * (+1 zero word), taps 0 and 1 in word 0. */
#include "bnn.h"
#include "model_data.h"   /* BNN_PACKED_TAPS, BNN_SPARSE: 0 leaves the bit shifting out */

/* Appends the low `bits` bits of v (higher bits are 0) to the stream at *p. */
static inline void put(uint32_t **p, uint32_t *acc, int *fill, uint32_t v, int bits) {
  *acc |= v << *fill;
  if (*fill + bits >= 32) {
    *(*p)++ = *acc;
    *acc = *fill ? v >> (32 - *fill) : 0u;
    *fill += bits - 32;
  } else {
    *fill += bits;
  }
}

/* in_c a multiple of 32, no zero padding under the kernel: each kernel row is one
 * run of k_w * words input words (or zeros in "+1" padding). */
static void copy_rows(const bnn_layer *l, const uint32_t *in, int iy, int ix, uint32_t *p) {
  const int words = BNN_WORDS(l->in_c), run = l->k_w * words;
  const int inside_x = ix >= 0 && ix + l->k_w <= l->in_w;
  uint32_t *end = p + BNN_PATCH_WORDS(l);
  for (int ky = 0; ky < l->k_h; ++ky, ++iy) {
    const uint32_t *x = in + (iy * l->in_w + ix) * words;
    if (iy < 0 || iy >= l->in_h) {
      for (int k = 0; k < run; ++k) *p++ = 0u;
    } else if (inside_x) {
      for (int k = 0; k < run; ++k) *p++ = x[k];
    } else {
      for (int kx = 0; kx < l->k_w; ++kx, x += words) {
        const int inside = ix + kx >= 0 && ix + kx < l->in_w;
        for (int j = 0; j < words; ++j) *p++ = inside ? x[j] : 0u;
      }
    }
  }
  while (p < end) *p++ = 0u;
}

/* in_c < 32, no zero padding under the kernel: one input word per tap, its in_c bits
 * shifted in after the previous tap's ("+1" padding: zeros). */
static void shift_taps(const bnn_layer *l, const uint32_t *in, int iy, int ix, uint32_t *p) {
  const int bits = l->in_c;
  uint32_t *end = p + BNN_PATCH_WORDS(l), acc = 0u;
  int fill = 0;
  for (int ky = 0; ky < l->k_h; ++ky, ++iy) {
    const uint32_t *x = in + iy * l->in_w + ix;
    const int row = iy >= 0 && iy < l->in_h;
    for (int kx = 0; kx < l->k_w; ++kx) {
      const uint32_t v = row && ix + kx >= 0 && ix + kx < l->in_w ? x[kx] : 0u;
      acc |= v << fill;
      fill += bits;
      if (fill >= 32) {
        *p++ = acc;
        fill -= 32;
        acc = fill ? v >> (bits - fill) : 0u;
      }
    }
  }
  if (fill) *p++ = acc;
  while (p < end) *p++ = 0u;
}

int bnn_gather_patch(const bnn_layer *l, const uint32_t *in, int oy, int ox, uint32_t *patch,
                     uint32_t *mask) {
  const int iy = oy * l->stride_h - l->pad_top, ix = ox * l->stride_w - l->pad_left;
  if ((!BNN_PACKED_TAPS && !BNN_SPARSE) ||
      ((l->in_c & 31) == 0 && (l->pad_value || (iy >= 0 && ix >= 0 && iy + l->k_h <= l->in_h &&
                                                ix + l->k_w <= l->in_w)))) {
    copy_rows(l, in, iy, ix, patch);
    return 0;
  }
  if (BNN_PACKED_TAPS && l->in_c < 32 && (l->pad_value || (iy >= 0 && ix >= 0 &&
                                          iy + l->k_h <= l->in_h && ix + l->k_w <= l->in_w))) {
    shift_taps(l, in, iy, ix, patch);
    return 0;
  }
  const int words = BNN_WORDS(l->in_c), last = l->in_c - 32 * (words - 1);
  const uint32_t last_ones = last == 32 ? ~0u : (1u << last) - 1u;
  int outside = 0;
  for (int ky = 0; ky < l->k_h; ++ky) {
    const int iy = oy * l->stride_h - l->pad_top + ky;
    for (int kx = 0; kx < l->k_w; ++kx) {
      const int ix = ox * l->stride_w - l->pad_left + kx;
      const int in_image = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
      outside |= !in_image && !l->pad_value;
    }
  }
  uint32_t acc = 0, macc = 0;
  int fill = 0, mfill = 0;
  uint32_t *p = patch, *m = mask;
  for (int ky = 0; ky < l->k_h; ++ky) {
    const int iy = oy * l->stride_h - l->pad_top + ky;
    for (int kx = 0; kx < l->k_w; ++kx) {
      const int ix = ox * l->stride_w - l->pad_left + kx;
      const int in_image = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
      const uint32_t *x = in + (iy * l->in_w + ix) * words;
      for (int j = 0; j < words; ++j) {
        const int bits = j == words - 1 ? last : 32;
        if ((l->in_c & 31) == 0) {
          *p++ = in_image ? x[j] : 0u;    /* "+1" padding: bits 0 */
        } else {
          put(&p, &acc, &fill, in_image ? x[j] : 0u, bits);
        }
        if (outside) put(&m, &macc, &mfill, in_image ? (j == words - 1 ? last_ones : ~0u) : 0u,
                         bits);
      }
    }
  }
  if (fill) *p++ = acc;
  if (outside && mfill) *m++ = macc;
  while (p < patch + BNN_PATCH_WORDS(l)) *p++ = 0u;              /* zero words up to 3k */
  while (outside && m < mask + BNN_PATCH_WORDS(l)) *m++ = 0u;
  return outside;
}
