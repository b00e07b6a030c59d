/* Max-pool on packed +-1 values: the max is -1 only if every value is -1, so the
 * output word is the AND of the window's words (window parts outside the input,
 * from "same" padding, are left out: the window is clipped to the input once per
 * pixel). Example: 2x2 pool of 32 channels: out = a & b & c & d, one word. */
#include "bnn.h"

static int clip(int v, int hi) { return v < 0 ? 0 : v > hi ? hi : v; }

void bnn_maxpool(const bnn_layer *l, const uint32_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->in_c);
  for (int oy = 0; oy < l->out_h; ++oy) {
    const int iy = oy * l->stride_h - l->pad_top;
    const int y0 = clip(iy, l->in_h), y1 = clip(iy + l->k_h, l->in_h);
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      const int ix = ox * l->stride_w - l->pad_left;
      const int x0 = clip(ix, l->in_w), x1 = clip(ix + l->k_w, l->in_w);
      for (int j = 0; j < words; ++j) {
        uint32_t v = 0xffffffffu;
        for (int y = y0; y < y1; ++y) {
          const uint32_t *x = in + (y * l->in_w + x0) * words + j;
          for (int k = x0; k < x1; ++k, x += words) v &= *x;
        }
        out[j] = v;
      }
    }
  }
}
