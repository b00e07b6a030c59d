/* Last layer: binary conv to int32 sums S (NHWC order, as Keras flattens them),
 * with the same patch gathering as bconv2d.c. */
#include "bnn.h"

void bnn_output_conv(const bnn_layer *l, const uint32_t *in, int32_t *sums, uint32_t *patch) {
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
#ifdef BNN_REFERENCE
      (void)patch;
      for (int oc = 0; oc < l->out_c; ++oc) *sums++ = bnn_bconv_sum_ref(l, in, oy, ox, oc);
#else
      const int gathered = bnn_gather_patch(l, in, oy, ox, patch);
      for (int oc = 0; oc < l->out_c; ++oc) {
        *sums++ = gathered ? bnn_bconv_sum_patch(l, patch, oc) : bnn_bconv_sum(l, in, oy, ox, oc);
      }
#endif
    }
  }
}
