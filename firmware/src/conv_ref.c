/* Reference kernels (KERNEL=ref) of the first and the binary convs: every input value
 * and weight decoded to an integer (-1, 0, +1 for bits and binary weights, the int8
 * code for the first layer's input), multiplied and added; S compared with the
 * threshold (bit 1 = -1 iff S < t), or written as the sum for the last conv. Slow and
 * obvious; the optimized kernels must give the same bits and sums. */
#include "bnn.h"

static int bit(const uint32_t *words, int i) { return (words[i >> 5] >> (i & 31)) & 1u; }

typedef int (*input_fn)(const bnn_layer *l, const void *in, int pixel, int c);
typedef int (*weight_fn)(const bnn_layer *l, int oc, int ky, int kx, int c);

static int code(const bnn_layer *l, const void *in, int pixel, int c) {
  return ((const int8_t *)in)[pixel * l->in_c + c];
}

static int sign(const bnn_layer *l, const void *in, int pixel, int c) {
  return bit((const uint32_t *)in + pixel * BNN_WORDS(l->in_c), c) ? -1 : 1;
}

/* first-conv weights: int16, each filter padded to an even count (bnn.h) */
static int first_weight(const bnn_layer *l, int oc, int ky, int kx, int c) {
  const int n = l->k_h * l->k_w * l->in_c;
  return ((const int16_t *)l->weights)[oc * (n + (n & 1)) + (ky * l->k_w + kx) * l->in_c + c];
}

/* Weight of binary filter oc at tap (ky, kx), input channel c, from the bit stream,
 * the pair layout (one word per tap, read from its low half), the masked layout or
 * the ternary lists (bnn.h). Example: binary_weight(l, 0, 1, 1, 0), the centre tap. */
static int binary_weight(const bnn_layer *l, int oc, int ky, int kx, int c) {
  const int tap = ky * l->k_w + kx, pairs = l->op == BNN_BCONV_PAIRS;
  const int n = pairs ? (l->k_h * l->k_w + 2) / 3 * 3 : BNN_PATCH_WORDS(l);
  const int b = tap * (pairs ? 32 : l->in_c) + c, k = b >> 5;
  const uint32_t *w = (const uint32_t *)l->weights;
  if (l->op == BNN_BCONV_MASKED) {          /* per 3 words: 3 signs, then 3 masks */
    const uint32_t *group = w + 2 * n * oc + 6 * (k / 3) + k % 3;
    return !bit(group + 3, b & 31) ? 0 : bit(group, b & 31) ? -1 : 1;
  }
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

/* The layer: packed output bits, or int32 sums (NHWC) when sums is given. */
static void conv(const bnn_layer *l, const void *in, input_fn input, weight_fn weight,
                 uint32_t *out, int32_t *sums) {
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      for (int oc = 0; oc < l->out_c; ++oc) {
        int32_t s = 0, nonzeros = 0;
        for (int ky = 0; ky < l->k_h; ++ky) {
          for (int kx = 0; kx < l->k_w; ++kx) {
            int pixel;
            const int inside = bnn_tap(l, oy, ox, ky, kx, &pixel);
            for (int c = 0; c < l->in_c; ++c) {
              const int w = weight(l, oc, ky, kx, c);
              s += (inside ? input(l, in, pixel, c) : l->pad_value) * w;
              nonzeros += w != 0;
            }
          }
        }
        if (sums) {
          *sums++ = s;
        } else {
          if ((oc & 31) == 0) out[oc >> 5] = 0;   /* bits past out_c stay 0 */
          /* the masked layout stores t - nonzeros (bnn.h) */
          const int32_t t = l->thresholds[oc] + (l->op == BNN_BCONV_MASKED ? nonzeros : 0);
          if (s < t) out[oc >> 5] |= 1u << (oc & 31);
        }
      }
      out += sums ? 0 : BNN_WORDS(l->out_c);
    }
  }
}

void bnn_conv_first_ref(const bnn_layer *l, const int8_t *in, uint32_t *out) {
  conv(l, in, code, first_weight, out, 0);
}

void bnn_bconv2d_ref(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums) {
  conv(l, in, sign, binary_weight, out, sums);
}
