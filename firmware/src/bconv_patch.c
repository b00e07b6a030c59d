/* Binary conv of one gathered patch against all filters (Cortex-M4/M7 and host).
 *
 * S = n - 2 * popcount(patch XOR filter) over the patch's n bits. Words (a
 * multiple of 3, bnn.h) go three at a time through a carry-save adder
 * (bnn_popcount3m), whose per-byte counts add up over up to 10 groups before the
 * bytes are summed; the masks stay in registers
 * and the loop only advances pointers. On Cortex-M4/M7, layers with thresholds and
 * up to 30 words run bconv_block_m4.S (the same operations in assembly, 32 filters
 * per call). Output bits: 1 (= -1) iff S < t.
 * Example: 32 channels, 3x3: 9 words per filter, three groups per filter. */
#ifndef __ARM_FEATURE_MVE
#include "bnn.h"
#include "bnn_popcount.h"

uint32_t bnn_bconv_block_m4(const uint32_t *patch, const uint32_t *end, const uint32_t **w,
                            const int32_t *t, int count, int32_t bits);

/* Per-byte popcounts of (p XOR *w) over `groups` (1..10) groups of 3 words;
 * advances *w past them. */
static inline uint32_t xor_bytes(const uint32_t *p, const uint32_t **w, int groups,
                                 bnn_masks_t m) {
  uint32_t bytes = 0;
  const uint32_t *q = *w;
  for (const uint32_t *end = p + 3 * groups; p < end; p += 3, q += 3) {
    bytes += bnn_popcount3m(p[0] ^ q[0], p[1] ^ q[1], p[2] ^ q[2], m);
  }
  *w = q;
  return bytes;
}

void bnn_bconv_patch(const bnn_layer *l, const uint32_t *patch, uint32_t *out, int32_t *sums) {
  const int groups = BNN_PATCH_WORDS(l) / 3;
  const int32_t bits = l->k_h * l->k_w * l->in_c;
  const uint32_t *w = (const uint32_t *)l->weights;
  const int32_t *t = l->thresholds;
#if defined(__ARM_ARCH_7EM__) && defined(__thumb2__)
  if (!sums && groups <= 10) {
    for (int oc = 0; oc < l->out_c; oc += 32) {
      const int count = l->out_c - oc < 32 ? l->out_c - oc : 32;
      out[oc >> 5] = bnn_bconv_block_m4(patch, patch + 3 * groups, &w, t + oc, count, bits) >>
                     (32 - count);
    }
    return;
  }
#endif
  const bnn_masks_t m = bnn_masks();
  for (int oc = 0; oc < l->out_c; ++oc) {
    int32_t neg = 0;
    for (int done = 0; done < groups; done += 10) {       /* bytes hold 10 groups */
      const int chunk = groups - done < 10 ? groups - done : 10;
      neg += bnn_bytes_total(xor_bytes(patch + 3 * done, &w, chunk, m));
    }
    const int32_t s = bits - 2 * neg;
    if (sums) {
      sums[oc] = s;
    } else if ((oc & 31) == 0) {
      out[oc >> 5] = (uint32_t)(s < t[oc]);
    } else {
      out[oc >> 5] |= (uint32_t)(s < t[oc]) << (oc & 31);
    }
  }
}
#endif
