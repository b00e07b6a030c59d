/* SBNN conv: weights {alpha, beta} = xi + eta * B with B in {0, 1} (converters/sbnn.py).
 * conv(x, W) = eta * S_B + xi * S_1: S_B sums the input under the filter's connections
 * only, S_1 (the sum of the whole window) is shared by all filters. BatchNorm and the
 * sign are folded into (S_B * 2^32 + ratio * S_1 < t) XOR flip per channel (int64).
 *
 * Flash holds the gaps between the layer's connections, filter after filter in the
 * patch order (ky, c, kx), Rice-coded (about 6 bits each at 5 %): a connection's
 * position says its filter, so no counts are stored. At the start of the layer the
 * lists are decoded into 16-bit offsets in the input map and 16-bit counts; the map is
 * unpacked as one byte per value, e = 1 - x (0 for +1, 2 for -1, 1 for zero padding),
 * laid out [row][channel][column] so that four neighbouring output pixels read one
 * 32-bit word per connection: S_B = n - sum(e), four pixels per add. The work and the
 * weight bytes follow the connections.
 * Example: 3x3 kernel, 128 channels, 5 % connections: per filter and four output pixels,
 * 58 loads and adds instead of 4 x 36 words of XOR-popcount. */
#include <string.h>

#include "bnn.h"
#include "bnn_popcount.h"

/* e = 1 - x of every input value, [py][c][px] over the padded map, and each map pixel's
 * channel sum of x in csum[py * wp + px] */
static void unpack(const bnn_layer *l, const uint32_t *in, int hp, int wp, uint8_t *map,
                   int32_t *csum) {
  const int c = l->in_c, words = BNN_WORDS(c);
  const uint8_t pad = l->pad_value ? 0 : 1;            /* +1 padding, or zero padding */
  for (int py = 0; py < hp; ++py) {
    uint8_t *row = map + py * c * wp;
    for (int px = 0; px < wp; ++px, ++csum) {
      const int iy = py - l->pad_top, ix = px - l->pad_left;
      uint8_t *m = row + px;
      if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) {
        for (int k = 0; k < c; ++k, m += wp) *m = pad;
        *csum = l->pad_value * c;
        continue;
      }
      const uint32_t *w = in + (iy * l->in_w + ix) * words;
      int32_t neg = 0;
      for (int k = 0; k < c; k += 32) {
        uint32_t bits = w[k >> 5];
        neg += bnn_popcount(bits);
        for (int j = k; j < c && j < k + 32; ++j, bits >>= 1, m += wp) *m = (uint8_t)((bits & 1u) << 1);
      }
      *csum = c - 2 * neg;
    }
  }
}

/* the connection lists as offsets (ky * c + ch) * wp + kx from a window's corner, and
 * each filter's count, from the Rice-coded gaps (LSB first: gap - 1 >> k ones, a zero,
 * the low k bits) */
static void decode(const bnn_layer *l, int wp, uint16_t *offsets, uint16_t *counts) {
  const uint32_t *src = (const uint32_t *)l->weights;
  const uint32_t kw = l->k_w, k = l->rice_k, low = (1u << k) - 1u;
  const uint32_t patch = (uint32_t)l->k_h * kw * l->in_c;
  uint64_t buf = *src++;
  int have = 32;
  uint32_t at = (uint32_t)-1, start = 0;                /* start: the filter's position */
  int oc = 0;
  uint16_t n = 0;
  for (uint32_t left = l->connections; left > 0; --left) {
    if (have < 32) {                                    /* at least 32 bits in buf */
      buf |= (uint64_t)*src++ << have;
      have += 32;
    }
    const uint32_t word = (uint32_t)buf, ones = ~word;
    const int t = ones ? __builtin_ctz(ones) : 32;
    uint32_t v;
    if (t + 1 + (int)k <= 32) {                         /* the whole code in one word */
      v = ((uint32_t)t << k) | ((word >> (t + 1)) & low);
      buf >>= t + 1 + (int)k;
      have -= t + 1 + (int)k;
    } else {                                            /* a long run of ones */
      uint32_t q = 0;
      for (;;) {
        if (have < 32) {
          buf |= (uint64_t)*src++ << have;
          have += 32;
        }
        const uint32_t o = ~(uint32_t)buf;
        const int r = o ? __builtin_ctz(o) : 32;
        q += (uint32_t)r;
        buf >>= r == 32 ? 32 : r + 1;
        have -= r == 32 ? 32 : r + 1;
        if (r < 32) break;
      }
      if (have < 32) {
        buf |= (uint64_t)*src++ << have;
        have += 32;
      }
      v = (q << k) | ((uint32_t)buf & low);
      buf >>= k;
      have -= (int)k;
    }
    at += v + 1u;
    while (at - start >= patch) {                       /* the next filter's position */
      counts[oc++] = n;
      n = 0;
      start += patch;
    }
    ++n;
    const uint32_t p = at - start, r = p / kw;
    *offsets++ = (uint16_t)(r * (uint32_t)wp + (p - r * kw));
  }
  for (; oc < l->out_c; n = 0) counts[oc++] = n;
}

/* Output bit of one channel for one pixel: 1 (= -1) iff (S_B * 2^32 + shared < t) XOR flip. */
static inline uint32_t decide(int32_t sb, int64_t shared, int64_t t, uint32_t flip) {
  const int64_t u = (int64_t)((uint64_t)(uint32_t)sb << 32) + shared;
  return (uint32_t)(u < t) ^ flip;
}

void bnn_sbconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *scratch) {
  const int c = l->in_c, kh = l->k_h, kw = l->k_w;
  const int hp = (l->out_h - 1) * l->stride_h + kh, wp = (l->out_w - 1) * l->stride_w + kw;
  const int words = BNN_WORDS(l->out_c), group = l->stride_w == 1 ? 4 : 1;
  uint8_t *map = (uint8_t *)scratch;
  int32_t *csum = (int32_t *)(scratch + (hp * c * wp + 4 + 3) / 4);   /* + 4 bytes slack */
  uint16_t *offsets = (uint16_t *)(csum + hp * wp), *counts = offsets + l->connections;
  unpack(l, in, hp, wp, map, csum);
  decode(l, wp, offsets, counts);
  for (int oy = 0; oy < l->out_h; ++oy) {
    const int py = oy * l->stride_h;
    for (int ox0 = 0; ox0 < l->out_w; ox0 += group) {
      const int np = l->out_w - ox0 < group ? l->out_w - ox0 : group;
      int64_t shared[4] = {0, 0, 0, 0};
      for (int q = 0; q < np; ++q) {
        const int px = (ox0 + q) * l->stride_w;
        int32_t s1 = 0;
        for (int ky = 0; ky < kh; ++ky) {
          for (int kx = 0; kx < kw; ++kx) s1 += csum[(py + ky) * wp + px + kx];
        }
        shared[q] = l->ratio * (int64_t)s1;
      }
      const uint8_t *base = map + py * c * wp + ox0 * l->stride_w;
      const uint16_t *o = offsets;
      uint32_t *dst = out + (oy * l->out_w + ox0) * words;
      uint32_t w0 = 0, w1 = 0, w2 = 0, w3 = 0;
      for (int oc = 0; oc < l->out_c; ++oc) {
        const int32_t n = counts[oc];
        int32_t e0 = 0, e1 = 0, e2 = 0, e3 = 0;
        for (int left = n; left > 0;) {
          const int m = left < 127 ? left : 127;         /* byte lanes hold up to 254 */
          uint32_t acc = 0, v0, v1;
          const uint16_t *end = o + m;
          for (; o + 2 <= end; o += 2) {                  /* four pixels' e per load */
            memcpy(&v0, base + o[0], 4);
            memcpy(&v1, base + o[1], 4);
            acc += v0 + v1;
          }
          if (o < end) {
            memcpy(&v0, base + *o++, 4);
            acc += v0;
          }
          left -= m;
          e0 += acc & 255u;
          e1 += (acc >> 8) & 255u;
          e2 += (acc >> 16) & 255u;
          e3 += acc >> 24;
        }
        const int bit = oc & 31;
        const uint32_t flip = (l->flips[oc >> 5] >> bit) & 1u;
        const int64_t t = l->thresholds64[oc];
        w0 |= decide(n - e0, shared[0], t, flip) << bit;
        w1 |= decide(n - e1, shared[1], t, flip) << bit;
        w2 |= decide(n - e2, shared[2], t, flip) << bit;
        w3 |= decide(n - e3, shared[3], t, flip) << bit;
        if (bit == 31 || oc + 1 == l->out_c) {
          const int k = oc >> 5;
          dst[k] = w0;
          if (np > 1) dst[words + k] = w1;
          if (np > 2) dst[2 * words + k] = w2;
          if (np > 3) dst[3 * words + k] = w3;
          w0 = w1 = w2 = w3 = 0;
        }
      }
    }
  }
}
