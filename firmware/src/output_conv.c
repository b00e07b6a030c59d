/* Last layer: binary conv to int32 sums S (NHWC order, as Keras flattens them). */
#include "bnn.h"

#ifdef BNN_REFERENCE
#define BCONV_SUM bnn_bconv_sum_ref
#else
#define BCONV_SUM bnn_bconv_sum
#endif

void bnn_output_conv(const bnn_layer *l, const uint32_t *in, int32_t *sums) {
  for (int oy = 0; oy < l->out_h; ++oy)
    for (int ox = 0; ox < l->out_w; ++ox)
      for (int oc = 0; oc < l->out_c; ++oc) *sums++ = BCONV_SUM(l, in, oy, ox, oc);
}
