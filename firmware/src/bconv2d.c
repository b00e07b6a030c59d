/* Binary conv + folded BatchNorm + sign: output bit 1 (= -1) iff S < threshold.
 * The optimized build gathers each output pixel's input patch once and runs one
 * straight XNOR-popcount loop per filter; pixels whose kernel overlaps zero
 * padding, and the reference build (BNN_REFERENCE), compute S tap by tap. */
#include <string.h>

#include "bnn.h"

void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c);
  memset(out, 0, (uint32_t)l->out_h * l->out_w * words * sizeof(uint32_t));
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox, out += words) {
#ifdef BNN_REFERENCE
      (void)patch;
      for (int oc = 0; oc < l->out_c; ++oc) {
        if (bnn_bconv_sum_ref(l, in, oy, ox, oc) < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
#else
      const int gathered = bnn_gather_patch(l, in, oy, ox, patch);
      for (int oc = 0; oc < l->out_c; ++oc) {
        const int32_t s = gathered ? bnn_bconv_sum_patch(l, patch, oc)
                                   : bnn_bconv_sum(l, in, oy, ox, oc);
        if (s < l->thresholds[oc]) out[oc >> 5] |= 1u << (oc & 31);
      }
#endif
    }
  }
}
