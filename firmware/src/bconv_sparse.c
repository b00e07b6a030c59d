/* Binary conv of one gathered patch where some weights or inputs are zero:
 * ternary layers (bnn.h: only the nonzero words of each filter are stored and
 * visited, through their word numbers) and pixels whose kernel overlaps zero
 * padding (mask = 1 inside the input). S = nonzeros - 2 * popcount((x ^ w) & m).
 * bnn_bconv_pair_sparse does two unmasked patches of a ternary layer at once.
 * Example: a ternary filter with 9 words of which 4 are empty visits 5 words. */
#include "bnn.h"
#include "bnn_popcount.h"

typedef struct {
  const uint16_t *index;
  const uint32_t *w;
  const uint16_t *counts;
  const int32_t *nonzeros, *t;
} bnn_ternary_cursor;
uint32_t bnn_ternary_block_m4(const uint32_t *patch, bnn_ternary_cursor *c, int count);
uint64_t bnn_ternary_pair_m4(const uint32_t *a, const uint32_t *b, bnn_ternary_cursor *c,
                             int count);

/* popcount((patch[k] ^ sign) & nonzero) summed over a filter's listed words k =
 * index[i]: `full` sign words, then `partial` (sign, nonzero) pairs, three at a time
 * (on Cortex-M4/M7/M55, bconv_listed_m4.S does this for 32 filters per call). */
static int32_t listed_count(const uint32_t *patch, const uint16_t *index, const uint32_t *w,
                            int full, int partial) {
  int32_t total = 0;
  for (int i = 0; i < full + partial;) {
    const int step = i < full ? 1 : 2, left = (i < full ? full : full + partial) - i;
    const uint32_t *s = i < full ? w + i : w + full + 2 * (i - full);
    uint32_t x[3] = {0u, 0u, 0u};
    for (int j = 0; j < 3 && j < left; ++j, ++i, s += step) {
      x[j] = (patch[index[i]] ^ s[0]) & (step == 2 ? s[1] : ~0u);
    }
    total += bnn_bytes_total(bnn_popcount3(x[0], x[1], x[2]));
  }
  return total;
}

/* popcount((x ^ sign) & nonzero & mask) and popcount(nonzero & mask) of word k */
static inline void masked(const uint32_t *patch, const uint32_t *mask, int k, uint32_t sign,
                          uint32_t nonzero, int32_t *neg, int32_t *count) {
  const uint32_t m = mask[k] & nonzero;
  *neg += bnn_popcount((patch[k] ^ sign) & m);
  *count += bnn_popcount(m);
}

void bnn_bconv_patch_sparse(const bnn_layer *l, const uint32_t *patch, const uint32_t *mask,
                            uint32_t *out, int32_t *sums) {
  const int n = BNN_PATCH_WORDS(l);
  const uint32_t *w = (const uint32_t *)l->weights;
  const uint16_t *index = l->index;
  const int32_t *t = l->thresholds;
  uint32_t word = 0;
  if (l->counts && !mask && !sums) {                   /* ternary layer, the common case */
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
    if (n <= 30) {                                     /* full + partial <= 30: one call */
      bnn_ternary_cursor c = {index, w, l->counts, l->nonzeros, t};
      for (int oc = 0; oc < l->out_c; oc += 32) {
        const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
        out[oc >> 5] = bnn_ternary_block_m4(patch, &c, count) >> (32 - count);
      }
      return;
    }
#endif
    for (int oc = 0; oc < l->out_c; ++oc) {
      const int full = l->counts[2 * oc], partial = l->counts[2 * oc + 1];
      const int32_t s = l->nonzeros[oc] - 2 * listed_count(patch, index, w, full, partial);
      index += full + partial;
      w += full + 2 * partial;
      word = (word >> 1) | ((uint32_t)(s - t[oc]) & 0x80000000u);   /* sign = the output bit */
      if ((oc & 31) == 31) {
        out[oc >> 5] = word;
      } else if (oc + 1 == l->out_c) {
        out[oc >> 5] = word >> (31 - (oc & 31));
      }
    }
    return;
  }
  for (int oc = 0; oc < l->out_c; ++oc) {
    int32_t neg = 0, count = 0;
    if (!l->counts) {                                   /* binary layer, zero padding */
      for (int k = 0; k < n; ++k) masked(patch, mask, k, w[k], ~0u, &neg, &count);
      w += n;
    } else {
      const int full = l->counts[2 * oc], partial = l->counts[2 * oc + 1];
      if (mask) {
        for (int i = 0; i < full; ++i) masked(patch, mask, index[i], w[i], ~0u, &neg, &count);
        for (int i = 0; i < partial; ++i) {
          masked(patch, mask, index[full + i], w[full + 2 * i], w[full + 2 * i + 1], &neg, &count);
        }
      } else {
        neg = listed_count(patch, index, w, full, partial);
        count = l->nonzeros[oc];
      }
      index += full + partial;
      w += full + 2 * partial;
    }
    const int32_t s = count - 2 * neg;
    if (sums) {
      sums[oc] = s;
      continue;
    }
    word |= (uint32_t)(s < t[oc]) << (oc & 31);
    if ((oc & 31) == 31 || oc + 1 == l->out_c) {
      out[oc >> 5] = word;
      word = 0;
    }
  }
}

void bnn_bconv_pair_sparse(const bnn_layer *l, const uint32_t *a, const uint32_t *b,
                           uint32_t *out_a, uint32_t *out_b) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (BNN_PATCH_WORDS(l) <= 30) {      /* both pixels per pass: bconv_listed_pair_m4.S */
    bnn_ternary_cursor c = {l->index, (const uint32_t *)l->weights, l->counts, l->nonzeros,
                            l->thresholds};
    for (int oc = 0; oc < l->out_c; oc += 32) {
      const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
      const uint64_t ab = bnn_ternary_pair_m4(a, b, &c, count);
      out_a[oc >> 5] = (uint32_t)ab >> (32 - count);
      out_b[oc >> 5] = (uint32_t)(ab >> 32) >> (32 - count);
    }
    return;
  }
#endif
  bnn_bconv_patch_sparse(l, a, 0, out_a, 0);
  bnn_bconv_patch_sparse(l, b, 0, out_b, 0);
}
