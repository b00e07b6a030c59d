/* First layer: int8 input codes (pixel - 128) times weights in {-1, 0, +1},
 * folded BatchNorm + sign as an integer threshold, packed output. Each output
 * pixel's input patch (padding filled with pad_value) is gathered once; each
 * filter is then one straight multiply-accumulate loop. */
#include <string.h>

#include "bnn.h"

void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out, int8_t *patch) {
  const int words = BNN_WORDS(l->out_c);
  const int n = l->k_h * l->k_w * l->in_c;
  const int8_t *weights = (const int8_t *)l->weights;
  memset(out, 0, (uint32_t)l->out_h * l->out_w * words * sizeof(uint32_t));
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      int8_t *p = patch;
      for (int ky = 0; ky < l->k_h; ++ky) {
        const int iy = oy * l->stride_h - l->pad_top + ky;
        for (int kx = 0; kx < l->k_w; ++kx, p += l->in_c) {
          const int ix = ox * l->stride_w - l->pad_left + kx;
          if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) {
            memset(p, l->pad_value, (uint32_t)l->in_c);
          } else {
            memcpy(p, in + ((uint32_t)iy * l->in_w + ix) * l->in_c, (uint32_t)l->in_c);
          }
        }
      }
      const int8_t *w = weights;
      for (int oc = 0; oc < l->out_c; ++oc, w += n) {
        int32_t sum = 0;
        for (int k = 0; k < n; ++k) sum += w[k] * patch[k];
        if (sum < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
    }
  }
}
