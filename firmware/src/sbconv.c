/* SBNN conv: weights {alpha, beta} = xi + eta * B with B in {0, 1} (converters/sbnn.py).
 * conv(x, W) = eta * S_B + xi * S_1: S_B sums the input under the filter's connections
 * only, S_1 (the sum of the whole window) is shared by all filters. BatchNorm and the
 * sign are folded into s * (S_B * 2^32 + ratio * S_1) >= t per channel (int64).
 *
 * The packed input is first unpacked into an int8 map of +-1 (the padding value around
 * it), one row of pixels after the other, with each pixel's channel sum; then every
 * filter walks its connection list: per kernel row and chunk of 255 positions (kx * C
 * + c) a count and one byte per connection. The work and the weight bytes follow the
 * connections; a filter without any costs its chunk counts only.
 * Example: 3x3 kernel, 128 channels, 5 % connections: 58 byte loads per filter and
 * output pixel instead of 36 words of XOR-popcount. */
#include <string.h>

#include "bnn.h"
#include "bnn_popcount.h"

/* 4 bits (1 = -1) -> 4 int8 values, little-endian */
static const uint32_t kNibble[16] = {
    0x01010101u, 0x010101ffu, 0x0101ff01u, 0x0101ffffu, 0x01ff0101u, 0x01ff01ffu,
    0x01ffff01u, 0x01ffffffu, 0xff010101u, 0xff0101ffu, 0xff01ff01u, 0xff01ffffu,
    0xffff0101u, 0xffff01ffu, 0xffffff01u, 0xffffffffu};

static void unpack(const bnn_layer *l, const uint32_t *in, int hp, int wp, int8_t *map,
                   int32_t *csum) {
  const int c = l->in_c, words = BNN_WORDS(c);
  for (int py = 0; py < hp; ++py) {
    for (int px = 0; px < wp; ++px, map += c, ++csum) {
      const int iy = py - l->pad_top, ix = px - l->pad_left;
      if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) {
        memset(map, l->pad_value, (size_t)c);
        *csum = l->pad_value * c;
        continue;
      }
      const uint32_t *w = in + (iy * l->in_w + ix) * words;
      int32_t neg = 0;
      for (int k = 0; k < c; k += 32) {
        uint32_t bits = w[k >> 5];
        neg += bnn_popcount(bits);
        for (int j = k; j < c && j < k + 32; j += 4, bits >>= 4) {
          memcpy(map + j, &kNibble[bits & 15u], 4);   /* may spill into the next pixel */
        }
      }
      *csum = c - 2 * neg;
    }
  }
}

static inline int32_t listed_sum(const int8_t *seg, const uint8_t *off, int n) {
  int32_t a = 0, b = 0;
  for (; n >= 4; n -= 4, off += 4) {
    a += seg[off[0]];
    b += seg[off[1]];
    a += seg[off[2]];
    b += seg[off[3]];
  }
  for (; n > 0; --n) a += seg[*off++];
  return a + b;
}

void bnn_sbconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *scratch) {
  const int c = l->in_c, kh = l->k_h, kw = l->k_w, per_row = l->chunks_per_row;
  const int hp = (l->out_h - 1) * l->stride_h + kh, wp = (l->out_w - 1) * l->stride_w + kw;
  int8_t *map = (int8_t *)scratch;
  int32_t *csum = (int32_t *)(scratch + (hp * wp * c + 7) / 4);
  unpack(l, in, hp, wp, map, csum);
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      const int py = oy * l->stride_h, px = ox * l->stride_w;
      int32_t s1 = 0;
      for (int ky = 0; ky < kh; ++ky) {
        for (int kx = 0; kx < kw; ++kx) s1 += csum[(py + ky) * wp + px + kx];
      }
      const int64_t shared = l->ratio * (int64_t)s1;
      const int8_t *base = map + (py * wp + px) * c;
      const uint8_t *count = l->chunks, *off = (const uint8_t *)l->weights;
      uint32_t word = 0;
      for (int oc = 0; oc < l->out_c; ++oc) {
        int32_t sb = 0;
        for (int ky = 0; ky < kh; ++ky) {
          const int8_t *seg = base + ky * wp * c;
          for (int j = 0; j < per_row; ++j, seg += 255) {
            const int n = *count++;
            sb += listed_sum(seg, off, n);
            off += n;
          }
        }
        int64_t u = (int64_t)sb * 4294967296LL + shared;
        u = l->signs[oc] > 0 ? u : l->signs[oc] < 0 ? -u : 0;
        word |= (uint32_t)(u < l->thresholds64[oc]) << (oc & 31);   /* 1 = -1 */
        if ((oc & 31) == 31 || oc + 1 == l->out_c) {
          *out++ = word;
          word = 0;
        }
      }
    }
  }
}
