/* Binary conv of one gathered patch where some weights or inputs are zero:
 * ternary layers (bnn.h: only the nonzero words of each filter are stored and
 * visited, through their word numbers) and pixels whose kernel overlaps zero
 * padding (mask = 1 inside the input). S = nonzeros - 2 * popcount((x ^ w) & m).
 * Example: a ternary filter with 9 words of which 4 are empty visits 5 words. */
#include "bnn.h"
#include "bnn_popcount.h"

/* Sum over the listed words k = index[i] of popcount((patch[k] ^ sign) & nonzero):
 * full words store sign only (step 1), partial words (sign, nonzero) (step 2). */
static int32_t listed_count(const uint32_t *patch, const uint16_t *index, const uint32_t *w,
                            int count, int step) {
  int32_t total = 0;
  while (count > 0) {
    const int chunk = count < 30 ? count : 30;
    uint32_t bytes = 0;
    int i = 0;
    for (; i + 3 <= chunk; i += 3, w += 3 * step) {
      uint32_t a = patch[index[i]] ^ w[0], b = patch[index[i + 1]] ^ w[step],
               c = patch[index[i + 2]] ^ w[2 * step];
      if (step == 2) a &= w[1], b &= w[3], c &= w[5];
      bytes += bnn_popcount3(a, b, c);
    }
    for (; i < chunk; ++i, w += step) {
      bytes += bnn_popcount3((patch[index[i]] ^ w[0]) & (step == 2 ? w[1] : ~0u), 0u, 0u);
    }
    total += bnn_bytes_total(bytes);
    index += chunk;
    count -= chunk;
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
  uint32_t word = 0;
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
        neg = listed_count(patch, index, w, full, 1) +
              listed_count(patch, index + full, w + full, partial, 2);
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
    word |= (uint32_t)(s < l->thresholds[oc]) << (oc & 31);
    if ((oc & 31) == 31 || oc + 1 == l->out_c) {
      out[oc >> 5] = word;
      word = 0;
    }
  }
}
