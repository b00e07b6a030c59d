/* Binary conv layer: for every output pixel, gather its input patch into a bit
 * stream, then run the filters over it: the dense kernel (bconv_patch.c), or the
 * masked one for ternary layers with scattered zeros (bconv_masked.c), the
 * sparse one for ternary layers and pixels that overlap zero padding
 * (bconv_sparse.c; left out of models without either, see BNN_SPARSE in
 * model_data.h). Ternary layers take two consecutive pixels (row-major order)
 * at a time when neither overlaps zero padding: two patches, one pass over the
 * filters. Thresholds pack the output bits; the last conv (no thresholds)
 * writes int32 sums instead, in NHWC order as Keras flattens them. */
#include "bnn.h"
#include "model_data.h"   /* BNN_SPARSE: 0 if no layer needs bconv_sparse.c (less flash) */
                          /* BNN_USES(BNN_BCONV_MASKED): masked ternary layers */

/* 1 if the kernel at output pixel (oy, ox) overlaps zero padding (a masked patch) */
static int zero_padded(const bnn_layer *l, int oy, int ox) {
  const int iy = oy * l->stride_h - l->pad_top, ix = ox * l->stride_w - l->pad_left;
  return !l->pad_value && (iy < 0 || ix < 0 || iy + l->k_h > l->in_h || ix + l->k_w > l->in_w);
}

void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums,
                 uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c), n = BNN_PATCH_WORDS(l);
  const int pairs = BNN_SPARSE && l->op == BNN_BCONV && l->counts && !sums;
  uint32_t *mask = patch + n;
  if (sums) out = 0;
  for (int oy = 0, ox = 0; oy < l->out_h;) {
    const int next_y = ox + 1 < l->out_w ? oy : oy + 1, next_x = ox + 1 < l->out_w ? ox + 1 : 0;
    if (pairs && next_y < l->out_h && !zero_padded(l, oy, ox) &&
        !zero_padded(l, next_y, next_x)) {
      bnn_gather_patch(l, in, oy, ox, patch, 0);
      bnn_gather_patch(l, in, next_y, next_x, patch + n, 0);
      bnn_bconv_pair_sparse(l, patch, patch + n, out, out + words);
      out += 2 * words;
      oy = next_x + 1 < l->out_w ? next_y : next_y + 1;
      ox = next_x + 1 < l->out_w ? next_x + 1 : 0;
      continue;
    }
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
    oy = next_y;
    ox = next_x;
  }
}
