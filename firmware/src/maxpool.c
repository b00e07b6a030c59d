/* Max-pool on packed +-1 values: the max is -1 only if every value is -1, so the
 * output word is the AND of the window's words (window parts outside the input,
 * from "same" padding, are left out). */
#include "bnn.h"

void bnn_maxpool(const bnn_layer *l, const uint32_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->in_c);
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      for (int j = 0; j < words; ++j) out[j] = 0xffffffffu;
      for (int ky = 0; ky < l->k_h; ++ky) {
        const int iy = oy * l->stride_h - l->pad_top + ky;
        for (int kx = 0; kx < l->k_w; ++kx) {
          const int ix = ox * l->stride_w - l->pad_left + kx;
          if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) continue;
          const uint32_t *x = in + ((uint32_t)iy * l->in_w + ix) * words;
          for (int j = 0; j < words; ++j) out[j] &= x[j];
        }
      }
    }
  }
}
