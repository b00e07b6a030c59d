/* First layer, reference (KERNEL=ref): S = sum of input code * weight, one at a
 * time, with pad_value outside the input; bit 1 (= -1) iff S < threshold. */
#include "bnn.h"

void bnn_conv_first_ref(const bnn_layer *l, const int8_t *in, uint32_t *out) {
  const int n = l->k_h * l->k_w * l->in_c, pairs = (n + 1) / 2;
  const int16_t *weights = (const int16_t *)l->weights;  /* little-endian int16 pairs */
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += BNN_WORDS(l->out_c)) {
      for (int oc = 0; oc < l->out_c; ++oc) {
        int32_t s = 0;
        for (int ky = 0; ky < l->k_h; ++ky) {
          for (int kx = 0; kx < l->k_w; ++kx) {
            const int iy = oy * l->stride_h - l->pad_top + ky;
            const int ix = ox * l->stride_w - l->pad_left + kx;
            const int inside = iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
            for (int c = 0; c < l->in_c; ++c) {
              const int x = inside ? in[(iy * l->in_w + ix) * l->in_c + c] : l->pad_value;
              s += x * weights[oc * 2 * pairs + (ky * l->k_w + kx) * l->in_c + c];
            }
          }
        }
        if ((oc & 31) == 0) out[oc >> 5] = 0;     /* bits past out_c stay 0 */
        if (s < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
    }
  }
}
