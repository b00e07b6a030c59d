/* Binary conv layer, reference (KERNEL=ref): every input bit and weight decoded to
 * -1, 0 or +1, multiplied and added, S compared with the threshold. Slow and
 * obvious; the optimized kernels must give the same bits and sums. */
#include "bnn.h"

static int bit(const uint32_t *words, int i) { return (words[i >> 5] >> (i & 31)) & 1u; }

/* Weight of filter oc at tap (ky, kx), input channel c, from the bit stream or the
 * ternary lists (bnn.h). Example: bnn_weight_ref(l, 0, 1, 1, 0), the centre tap. */
int32_t bnn_weight_ref(const bnn_layer *l, int oc, int ky, int kx, int c) {
  const int n = BNN_PATCH_WORDS(l);
  const int b = (ky * l->k_w + kx) * l->in_c + c, k = b >> 5;
  const uint32_t *w = (const uint32_t *)l->weights;
  if (!l->counts) return bit(w + oc * n, b) ? -1 : 1;
  const uint16_t *index = l->index;
  for (int f = 0; f < oc; ++f) {
    index += l->counts[2 * f] + l->counts[2 * f + 1];
    w += l->counts[2 * f] + 2 * l->counts[2 * f + 1];
  }
  const int full = l->counts[2 * oc], partial = l->counts[2 * oc + 1];
  for (int i = 0; i < full; ++i) {
    if (index[i] == k) return bit(w + i, b & 31) ? -1 : 1;
  }
  for (int i = 0; i < partial; ++i) {
    const uint32_t *pair = w + full + 2 * i;
    if (index[full + i] == k) return !bit(pair + 1, b & 31) ? 0 : bit(pair, b & 31) ? -1 : 1;
  }
  return 0;
}

void bnn_bconv2d_ref(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums) {
  const int words = BNN_WORDS(l->in_c), out_words = BNN_WORDS(l->out_c);
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      for (int oc = 0; oc < l->out_c; ++oc) {
        int32_t s = 0;
        for (int ky = 0; ky < l->k_h; ++ky) {
          for (int kx = 0; kx < l->k_w; ++kx) {
            const int iy = oy * l->stride_h - l->pad_top + ky;
            const int ix = ox * l->stride_w - l->pad_left + kx;
            const int inside = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
            const uint32_t *x = in + (iy * l->in_w + ix) * words;
            for (int c = 0; c < l->in_c; ++c) {
              const int v = inside ? (bit(x, c) ? -1 : 1) : l->pad_value;
              s += v * bnn_weight_ref(l, oc, ky, kx, c);
            }
          }
        }
        if (sums) {
          *sums++ = s;
        } else {
          if ((oc & 31) == 0) out[oc >> 5] = 0;   /* bits past out_c stay 0 */
          if (s < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
        }
      }
      out += sums ? 0 : out_words;
    }
  }
}
