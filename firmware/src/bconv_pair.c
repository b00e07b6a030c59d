/* Binary conv of a 16-channel input (BNN_BCONV_PAIRS), two output pixels at a time.
 *
 * A 16-channel pixel fills half a word. Here one patch word holds tap k of two
 * horizontally adjacent output pixels, A (ox, low half) and B (ox + 1, high half),
 * and each filter stores tap k's 16 channels in both halves of its word k (bnn.h),
 * so every bit of every word is used and one pass over a filter counts both pixels:
 * the carry-save adder's byte counts keep the halves apart (bytes 0-1: A, 2-3: B).
 * The exporter picks this layout for binary layers with 16 input channels, dense
 * weights and "+1" padding (converters/c_export.py). Cortex-M4/M7/M55 run
 * bconv_pair_m4.S (32 filters per call), the host this file's C loop.
 * Example: 14x14x16 -> 14x14x32, 3x3: 98 pairs of 9-word patches, 32 filters each. */
#include "bnn.h"
#include "bnn_popcount.h"

uint64_t bnn_bconv_pair_m4(const uint32_t *patch, const uint32_t *end, const uint32_t **w,
                           const int32_t *t, int count, int32_t bits);

/* Output bits of pixels A (low word) and B (high word) for `count` filters from *w. */
static uint64_t pair_block(const uint32_t *patch, int groups, const uint32_t **w,
                           const int32_t *t, int count, int32_t bits) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (groups <= 10) return bnn_bconv_pair_m4(patch, patch + 3 * groups, w, t, count, bits);
#endif
  const bnn_masks_t m = bnn_masks();
  uint32_t a = 0, b = 0;
  for (int oc = 0; oc < count; ++oc) {
    int32_t neg_a = 0, neg_b = 0;
    for (int done = 0; done < groups; done += 10) {       /* bytes hold 10 groups */
      uint32_t bytes = 0;
      for (int g = done; g < groups && g < done + 10; ++g, *w += 3) {
        const uint32_t *p = patch + 3 * g, *q = *w;
        bytes += bnn_popcount3m(p[0] ^ q[0], p[1] ^ q[1], p[2] ^ q[2], m);
      }
      bytes = (bytes & 0x00ff00ffu) + ((bytes >> 8) & 0x00ff00ffu);
      neg_a += (int32_t)(bytes & 0xffffu);
      neg_b += (int32_t)(bytes >> 16);
    }
    a = (a >> 1) | ((uint32_t)(bits - 2 * neg_a - t[oc]) & 0x80000000u);  /* sign: S < t */
    b = (b >> 1) | ((uint32_t)(bits - 2 * neg_b - t[oc]) & 0x80000000u);
  }
  return ((uint64_t)b << 32) | a;
}

/* The pair patch of output pixels (oy, ox) and (oy, ox + 1): word ky * k_w + kx is
 * A's input pixel under the tap | B's << 16; "+1" padding and a missing B are 0. */
static void gather_pair(const bnn_layer *l, const uint32_t *in, int oy, int ox, int has_b,
                        uint32_t *p) {
  const int iy0 = oy * l->stride_h - l->pad_top, ix0 = ox * l->stride_w - l->pad_left;
  const int ixb = ix0 + l->stride_w, words = (l->k_h * l->k_w + 2) / 3 * 3;
  uint32_t *end = p + words;
  if (iy0 >= 0 && ix0 >= 0 && iy0 + l->k_h <= l->in_h && ixb + l->k_w <= l->in_w && has_b) {
    for (int ky = 0; ky < l->k_h; ++ky) {              /* inside: no bounds checks */
      const uint32_t *x = in + (iy0 + ky) * l->in_w + ix0, *y = x + l->stride_w;
      for (int kx = 0; kx < l->k_w; ++kx) *p++ = x[kx] | (y[kx] << 16);
    }
  } else {
    for (int ky = 0; ky < l->k_h; ++ky) {
      const int iy = iy0 + ky, row = iy >= 0 && iy < l->in_h;
      const uint32_t *x = in + iy * l->in_w;
      for (int kx = 0; kx < l->k_w; ++kx) {
        const int xa = ix0 + kx, xb = ixb + kx;
        const uint32_t a = row && xa >= 0 && xa < l->in_w ? x[xa] : 0u;
        const uint32_t b = row && has_b && xb >= 0 && xb < l->in_w ? x[xb] : 0u;
        *p++ = a | (b << 16);
      }
    }
  }
  while (p < end) *p++ = 0u;
}

void bnn_bconv2d_pairs(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c), groups = (l->k_h * l->k_w + 2) / 3;
  const int32_t bits = 16 * l->k_h * l->k_w;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ox += 2, out += 2 * words) {
      const int has_b = ox + 1 < l->out_w;
      gather_pair(l, in, oy, ox, has_b, patch);
      const uint32_t *w = (const uint32_t *)l->weights;
      for (int oc = 0; oc < l->out_c; oc += 32) {
        const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
        const uint64_t ab = pair_block(patch, groups, &w, l->thresholds + oc, count, bits);
        out[oc >> 5] = (uint32_t)ab >> (32 - count);
        if (has_b) out[words + (oc >> 5)] = (uint32_t)(ab >> 32) >> (32 - count);
      }
    }
    if (l->out_w & 1) out -= words;                /* the last pair had no pixel B */
  }
}
