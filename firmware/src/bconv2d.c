/* Binary conv layer: for every output pixel, gather its input patch into a bit
 * stream, then run the filters over it: the dense kernel (bconv_patch.c), or the
 * masked one for ternary layers with scattered zeros (bconv_masked.c), the
 * sparse one for ternary layers and pixels that overlap zero padding
 * (bconv_sparse.c; left out of models without either, see BNN_SPARSE in
 * model_data.h). Ternary layers take two consecutive pixels (row-major order)
 * at a time where neither overlaps zero padding: two patches, one pass over the
 * filters. Thresholds pack the output bits; the last conv (no thresholds)
 * writes int32 sums instead, in NHWC order as Keras flattens them. */
#include "bnn.h"
#include "model_data.h"   /* BNN_SPARSE: 0 if no layer needs bconv_sparse.c (less flash) */
                          /* BNN_TERNARY_PAIRS: ternary layers run pixel pairs */
                          /* BNN_USES(BNN_BCONV_MASKED): masked ternary layers */

/* 1 if the kernel at output pixel (oy, ox) overlaps zero padding (a masked patch) */
static int zero_padded(const bnn_layer *l, int oy, int ox) {
  const int iy = oy * l->stride_h - l->pad_top, ix = ox * l->stride_w - l->pad_left;
  return !l->pad_value && (iy < 0 || ix < 0 || iy + l->k_h > l->in_h || ix + l->k_w > l->in_w);
}

/* (oy, ox) = the next output pixel in row-major order */
static inline void next_pixel(const bnn_layer *l, int *oy, int *ox) {
  if (++*ox == l->out_w) {
    *ox = 0;
    ++*oy;
  }
}

/* A ternary layer with thresholds: pixel pairs, else one pixel (masked or not). */
static void ternary_pixels(const bnn_layer *l, const uint32_t *in, uint32_t *out,
                           uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c), n = BNN_PATCH_WORDS(l);
  for (int oy = 0, ox = 0; oy < l->out_h; next_pixel(l, &oy, &ox), out += words) {
    int by = oy, bx = ox;                              /* pixel B, the next one */
    next_pixel(l, &by, &bx);
    if (by < l->out_h && !zero_padded(l, oy, ox) && !zero_padded(l, by, bx)) {
      bnn_gather_patch(l, in, oy, ox, patch, 0);
      bnn_gather_patch(l, in, by, bx, patch + n, 0);
      bnn_bconv_pair_sparse(l, patch, patch + n, out, out + words);
      oy = by;
      ox = bx;
      out += words;
    } else {
      const int masked = bnn_gather_patch(l, in, oy, ox, patch, patch + n);
      bnn_bconv_patch_sparse(l, patch, masked ? patch + n : 0, out, 0);
    }
  }
}

void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums,
                 uint32_t *patch) {
  const int words = BNN_WORDS(l->out_c);
  uint32_t *mask = patch + BNN_PATCH_WORDS(l);
  if (BNN_TERNARY_PAIRS && l->op == BNN_BCONV && l->counts && !sums) {
    ternary_pixels(l, in, out, patch);
    return;
  }
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
