/* Binary conv sum, reference: decode every weight to -1, 0 or +1 and every input
 * bit to +-1, and multiply-accumulate. Slow and obvious; the tests compare the
 * optimized kernel (bconv_sum.c) with it. */
#include "bnn.h"

static int bit(const uint32_t *words, int c) { return (words[c >> 5] >> (c & 31)) & 1u; }

/* Weight of filter oc at tap (ky, kx), input channel c. */
static int weight(const bnn_layer *l, int oc, int ky, int kx, int c) {
  const int words = BNN_WORDS(l->in_c);
  const int tap = ky * l->k_w + kx;
  if (!l->classes) {
    const uint32_t *w = (const uint32_t *)l->weights + ((uint32_t)oc * l->k_h * l->k_w + tap) * words;
    return bit(w, c) ? -1 : 1;
  }
  /* walk the filter's slots up to this one, adding up the words each stores */
  const int slots = l->k_h * l->k_w * words, target = tap * words + (c >> 5);
  const uint32_t *cls = l->classes + (uint32_t)oc * ((slots + 15) / 16);
  const uint32_t *w = (const uint32_t *)l->weights + l->starts[oc];
  for (int s = 0;; ++s) {
    const int kind = (cls[s / 16] >> (2 * (s % 16))) & 3;
    if (s == target) {
      if (kind == BNN_EMPTY || (kind == BNN_PARTIAL && !((w[1] >> (c & 31)) & 1u))) return 0;
      return ((w[0] >> (c & 31)) & 1u) ? -1 : 1;
    }
    w += kind;
  }
}

int32_t bnn_bconv_sum_ref(const bnn_layer *l, const uint32_t *in, int oy, int ox, int oc) {
  const int words = BNN_WORDS(l->in_c);
  int32_t sum = 0;
  for (int ky = 0; ky < l->k_h; ++ky) {
    for (int kx = 0; kx < l->k_w; ++kx) {
      const int iy = oy * l->stride_h - l->pad_top + ky;
      const int ix = ox * l->stride_w - l->pad_left + kx;
      const int inside = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
      for (int c = 0; c < l->in_c; ++c) {
        int x = l->pad_value;  /* +1 or 0 outside the input */
        if (inside) x = bit(in + ((uint32_t)iy * l->in_w + ix) * words, c) ? -1 : 1;
        sum += x * weight(l, oc, ky, kx, c);
      }
    }
  }
  return sum;
}
