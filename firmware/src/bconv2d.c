/* Binary conv layer: for every output pixel, gather its input patch into a bit
 * stream, then run the filters over it: the dense kernel (bconv_patch.c), or the
 * masked one for ternary layers with scattered zeros (bconv_masked.c), the
 * sparse one for ternary layers and pixels that overlap zero padding
 * (bconv_sparse.c; left out of models without either, see BNN_SPARSE in
 * model_data.h). Thresholds pack the output bits; the last conv (no
 * thresholds) writes int32 sums instead, in NHWC order as Keras flattens them. */
#include "bnn.h"
#include "model_data.h"   /* BNN_SPARSE: 0 if no layer needs bconv_sparse.c (less flash) */
                          /* BNN_USES(BNN_BCONV_MASKED): masked ternary layers */

void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums,
                 uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c);
  uint32_t *mask = patch + BNN_PATCH_WORDS(l);
  if (sums) out = 0;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      const int masked = bnn_gather_patch(l, in, oy, ox, patch, mask);
      if (BNN_USES(BNN_BCONV_MASKED) && l->op == BNN_BCONV_MASKED) {
        bnn_bconv_patch_masked(l, patch, out);
      } else if (BNN_SPARSE && (masked || l->counts)) {
        bnn_bconv_patch_sparse(l, patch, masked ? mask : 0, out, sums);
      } else {
        bnn_bconv_patch(l, patch, out, sums);
      }
      if (sums) {
        sums += l->out_c;
      } else {
        out += words;
      }
    }
  }
}
