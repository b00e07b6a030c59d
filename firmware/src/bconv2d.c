/* Binary conv + folded BatchNorm + sign: output bit 1 (= -1) iff S < threshold. */
#include <string.h>

#include "bnn.h"

#ifdef BNN_REFERENCE
#define BCONV_SUM bnn_bconv_sum_ref
#else
#define BCONV_SUM bnn_bconv_sum
#endif

void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out) {
  const int words = BNN_WORDS(l->out_c);
  memset(out, 0, (uint32_t)l->out_h * l->out_w * words * sizeof(uint32_t));
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
      for (int oc = 0; oc < l->out_c; ++oc) {
        if (BCONV_SUM(l, in, oy, ox, oc) < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
    }
  }
}
