/* Binary conv of one gathered patch for a ternary layer in the masked layout
 * (BNN_BCONV_MASKED): zeros scattered through every word, so no word can be skipped
 * and each is counted as popcount((patch XOR sign) AND mask). Each filter stores, per
 * 3 words of its bit stream, the 3 sign words then 3 mask words (1 where the weight
 * is nonzero); the thresholds hold t - nonzeros, so S - nonzeros = -2 * popcount
 * (bnn.h). The exporter picks this layout over the word lists (bconv_sparse.c) when
 * few words are empty (converters/c_export.py). Cortex-M4/M7/M55 run
 * bnn_bconv_masked_m4 (bconv_block_m4.S: 31 instructions per 3 words, dense: 27).
 * Example: 3x3x32 filter with half its weights zero: 9 sign and 9 mask words. */
#include "bnn.h"
#include "bnn_popcount.h"

uint32_t bnn_bconv_masked_m4(const uint32_t *patch, const uint32_t *end, const uint32_t **w,
                             const int32_t *t, int count, int32_t bits);

void bnn_bconv_patch_masked(const bnn_layer *l, const uint32_t *patch, uint32_t *out) {
  const int groups = BNN_PATCH_WORDS(l) / 3;
  const uint32_t *w = (const uint32_t *)l->weights;
  const int32_t *t = l->thresholds;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (groups <= 10) {                                  /* bytes hold 10 groups */
    for (int oc = 0; oc < l->out_c; oc += 32) {
      const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
      out[oc >> 5] = bnn_bconv_masked_m4(patch, patch + 3 * groups, &w, t + oc, count, 0) >>
                     (32 - count);
    }
    return;
  }
#endif
  const bnn_masks_t m = bnn_masks();
  uint32_t word = 0;
  for (int oc = 0; oc < l->out_c; ++oc) {
    int32_t neg = 0;
    for (int done = 0; done < groups; done += 10) {
      uint32_t bytes = 0;
      for (int g = done; g < groups && g < done + 10; ++g, w += 6) {
        const uint32_t *p = patch + 3 * g;
        bytes += bnn_popcount3m((p[0] ^ w[0]) & w[3], (p[1] ^ w[1]) & w[4],
                                (p[2] ^ w[2]) & w[5], m);
      }
      neg += bnn_bytes_total(bytes);
    }
    word = (word >> 1) | ((uint32_t)(-2 * neg - t[oc]) & 0x80000000u);  /* sign: S < t */
    if ((oc & 31) == 31 || oc + 1 == l->out_c) out[oc >> 5] = word >> (31 - (oc & 31));
  }
}
