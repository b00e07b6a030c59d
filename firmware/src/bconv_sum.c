/* Binary conv sum by XNOR-popcount on packed words (the optimized kernel).
 *
 * For each tap, S_tap = n - 2 * popcount(x XOR w), where n counts the real
 * channels. A tap in "+1" padding has input bits 0, so x XOR w = w; a tap in zero
 * padding contributes nothing. Ternary layers (see bnn.h) skip empty slots, mask
 * only partial ones, and start from the filter's count of nonzero weights, so
 * S = nonzeros - (nonzeros in skipped zero-padding taps) - 2 * popcount. */
#include "bnn.h"
#include "bnn_popcount.h"

static int32_t ternary_sum(const bnn_layer *l, const uint32_t *in, int oy, int ox, int oc) {
  const int words = BNN_WORDS(l->in_c);
  const int last = l->in_c - 32 * (words - 1);  /* channels in the last word */
  const uint32_t *cls = l->classes + (uint32_t)oc * ((l->k_h * l->k_w * words + 15) >> 4);
  const uint32_t *w = (const uint32_t *)l->weights + l->starts[oc];
  int32_t skipped = 0, neg = 0;
  uint32_t bits = 0;
  int slot = 0;
  for (int ky = 0; ky < l->k_h; ++ky) {
    const int iy = oy * l->stride_h - l->pad_top + ky;
    for (int kx = 0; kx < l->k_w; ++kx) {
      const int ix = ox * l->stride_w - l->pad_left + kx;
      const int inside = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
      const uint32_t *x = inside ? in + ((uint32_t)iy * l->in_w + ix) * words : 0;
      for (int j = 0; j < words; ++j, ++slot) {
        if ((slot & 15) == 0) bits = *cls++;
        const uint32_t c = bits & 3u;
        bits >>= 2;
        if (c == BNN_EMPTY) continue;
        if (x) {
          uint32_t d = x[j] ^ w[0];
          if (c == BNN_PARTIAL) d &= w[1];
          neg += bnn_popcount(d);
        } else if (l->pad_value) {
          neg += bnn_popcount(c == BNN_PARTIAL ? w[0] & w[1] : w[0]);
        } else {
          skipped += c == BNN_PARTIAL ? bnn_popcount(w[1]) : (j == words - 1 ? last : 32);
        }
        w += c;
      }
    }
  }
  return l->nonzeros[oc] - skipped - 2 * neg;
}

int32_t bnn_bconv_sum(const bnn_layer *l, const uint32_t *in, int oy, int ox, int oc) {
  if (l->classes) return ternary_sum(l, in, oy, ox, oc);
  const int words = BNN_WORDS(l->in_c);
  const int taps = l->k_h * l->k_w;
  const uint32_t *w = (const uint32_t *)l->weights + (uint32_t)oc * taps * words;
  int32_t count = 0, neg = 0;
  for (int ky = 0; ky < l->k_h; ++ky) {
    const int iy = oy * l->stride_h - l->pad_top + ky;
    for (int kx = 0; kx < l->k_w; ++kx, w += words) {
      const int ix = ox * l->stride_w - l->pad_left + kx;
      const int inside = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
      if (inside) {
        const uint32_t *x = in + ((uint32_t)iy * l->in_w + ix) * words;
        count += l->in_c;
        for (int j = 0; j < words; ++j) neg += bnn_popcount(x[j] ^ w[j]);
      } else if (l->pad_value) {
        count += l->in_c;
        for (int j = 0; j < words; ++j) neg += bnn_popcount(w[j]);
      }
    }
  }
  return count - 2 * neg;
}

int bnn_gather_patch(const bnn_layer *l, const uint32_t *in, int oy, int ox, uint32_t *patch) {
  const int words = BNN_WORDS(l->in_c);
  for (int ky = 0; ky < l->k_h; ++ky) {
    const int iy = oy * l->stride_h - l->pad_top + ky;
    for (int kx = 0; kx < l->k_w; ++kx, patch += words) {
      const int ix = ox * l->stride_w - l->pad_left + kx;
      if (iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w) {
        const uint32_t *x = in + ((uint32_t)iy * l->in_w + ix) * words;
        for (int j = 0; j < words; ++j) patch[j] = x[j];
      } else if (l->pad_value) {
        for (int j = 0; j < words; ++j) patch[j] = 0u;  /* +1 padding: bits 0 */
      } else {
        return 0;
      }
    }
  }
  return 1;
}

int32_t bnn_bconv_sum_patch(const bnn_layer *l, const uint32_t *patch, int oc) {
  const int n = l->k_h * l->k_w * BNN_WORDS(l->in_c);
  int32_t neg = 0;
  if (!l->classes) {
    const uint32_t *w = (const uint32_t *)l->weights + (uint32_t)oc * n;
    for (int k = 0; k < n; ++k) neg += bnn_popcount(patch[k] ^ w[k]);
    return l->k_h * l->k_w * l->in_c - 2 * neg;
  }
  const uint32_t *cls = l->classes + (uint32_t)oc * ((n + 15) >> 4);
  const uint32_t *w = (const uint32_t *)l->weights + l->starts[oc];
  for (int base = 0; base < n; base += 16) {
    uint32_t bits = *cls++;
    for (int k = base; bits; ++k, bits >>= 2) {  /* stops after the last nonempty slot */
      const uint32_t c = bits & 3u;
      if (c == BNN_EMPTY) continue;
      uint32_t d = patch[k] ^ w[0];
      if (c == BNN_PARTIAL) d &= w[1];
      neg += bnn_popcount(d);
      w += c;
    }
  }
  return l->nonzeros[oc] - 2 * neg;
}
