/* CBNN input layer: the bit slices of the pixels, packed for the binary first conv.
 * The int8 input code is pixel - 128, so the pixel byte is code ^ 0x80. Slice k of a
 * channel is +1 where bit k of the pixel is 1; packed activations store -1 as bit 1, so
 * the packed word of a pixel is its inverted byte, keeping the kept bits in (channel,
 * bit) order. When the kept bits are contiguous (the usual top-K) one channel is a
 * shift and a mask: a grey pixel with all 8 slices is just ~pixel & 0xff. */
#include "bnn.h"

void bnn_input_slices(const bnn_layer *l, const int8_t *in, uint32_t *out) {
  const uint8_t *bits = (const uint8_t *)l->weights;
  const int in_c = l->in_c, k = l->out_c / l->in_c, words = BNN_WORDS(l->out_c);
  const int pixels = l->in_h * l->in_w;
  const int contiguous = bits[k - 1] - bits[0] == k - 1;
  const uint32_t keep = k == 32 ? 0xffffffffu : (1u << k) - 1u;
  for (int p = 0; p < pixels; ++p, in += in_c, out += words) {
    for (int w = 0; w < words; ++w) out[w] = 0;
    for (int c = 0; c < in_c; ++c) {
      const uint32_t inverted = (uint8_t)~((uint8_t)in[c] ^ 0x80u);
      const int j0 = c * k;
      if (contiguous && (j0 & 31) + k <= 32) {
        out[j0 >> 5] |= ((inverted >> bits[0]) & keep) << (j0 & 31);
      } else {
        for (int i = 0; i < k; ++i) {
          const int j = j0 + i;
          out[j >> 5] |= ((inverted >> bits[i]) & 1u) << (j & 31);
        }
      }
    }
  }
}
