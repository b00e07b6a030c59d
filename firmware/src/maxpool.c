/* Max-pool on packed +-1 values: the max is -1 only if every value is -1, so the
 * output word is the AND of the window's words (window parts outside the input,
 * from "same" padding, are left out: the window is clipped to the input once per
 * pixel; 2x2 windows with stride 2 inside the input take a loop without clipping).
 * Example: 2x2 pool of 32 channels: out = a & b & c & d, one word. */
#include "bnn.h"

static int clip(int v, int hi) { return v < 0 ? 0 : v > hi ? hi : v; }

/* 2x2 windows with stride 2, all inside the input: four words ANDed per output word. */
static void pool2x2(const bnn_layer *l, const uint32_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->in_c), row = l->in_w * words;
  for (int oy = 0; oy < l->out_h; ++oy) {
    const uint32_t *x = in + 2 * oy * row;
    if (words == 1) {                                   /* up to 32 channels */
      for (const uint32_t *end = out + l->out_w; out < end; x += 2) {
        *out++ = x[0] & x[1] & x[row] & x[row + 1];
      }
      continue;
    }
    for (int ox = 0; ox < l->out_w; ++ox, x += words) {
      for (int j = 0; j < words; ++j, ++x) *out++ = x[0] & x[words] & x[row] & x[row + words];
    }
  }
}

void bnn_maxpool(const bnn_layer *l, const uint32_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->in_c);
  if (l->k_h == 2 && l->k_w == 2 && l->stride_h == 2 && l->stride_w == 2 && !l->pad_top &&
      !l->pad_left && 2 * l->out_h <= l->in_h && 2 * l->out_w <= l->in_w) {
    pool2x2(l, in, out);
    return;
  }
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
