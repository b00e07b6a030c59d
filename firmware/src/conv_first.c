/* First layer: int8 input codes (pixel - 128) times weights in {-1, 0, +1},
 * folded BatchNorm + sign as an integer threshold, packed output. */
#include <string.h>

#include "bnn.h"

void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->out_c);
  const int8_t *weights = (const int8_t *)l->weights;
  memset(out, 0, (uint32_t)l->out_h * l->out_w * words * sizeof(uint32_t));
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      for (int oc = 0; oc < l->out_c; ++oc) {
        const int8_t *w = weights + (uint32_t)oc * l->k_h * l->k_w * l->in_c;
        int32_t sum = 0;
        for (int ky = 0; ky < l->k_h; ++ky) {
          const int iy = oy * l->stride_h - l->pad_top + ky;
          for (int kx = 0; kx < l->k_w; ++kx, w += l->in_c) {
            const int ix = ox * l->stride_w - l->pad_left + kx;
            if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) {
              for (int c = 0; c < l->in_c; ++c) sum += w[c] * l->pad_value;
            } else {
              const int8_t *x = in + ((uint32_t)iy * l->in_w + ix) * l->in_c;
              for (int c = 0; c < l->in_c; ++c) sum += w[c] * x[c];
            }
          }
        }
        if (sum < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
    }
  }
}
