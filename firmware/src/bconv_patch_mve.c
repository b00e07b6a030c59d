/* Binary conv of one gathered patch against all filters, Cortex-M55 (Helium/MVE).
 *
 * S = n - 2 * popcount(patch XOR filter): four words per vector (the 1-3 words left
 * over in one vector predicated with VCTP), a per-byte SWAR popcount in vector
 * registers (MVE has no popcount instruction), byte counts added up in a vector and
 * then to a scalar by VADDVA. Output
 * bits: 1 (= -1) iff S < t, as in bconv_patch.c. Example: 9 words per filter: two full
 * vectors and one predicated to a single word. */
#ifdef __ARM_FEATURE_MVE
#include <arm_mve.h>

#include "bnn.h"

/* per-byte popcounts of x */
static inline uint8x16_t byte_counts(uint8x16_t x, uint8x16_t m1, uint8x16_t m2, uint8x16_t m4) {
  x = vsubq_u8(x, vandq_u8(vshrq_n_u8(x, 1), m1));
  x = vaddq_u8(vandq_u8(x, m2), vandq_u8(vshrq_n_u8(x, 2), m2));
  return vandq_u8(vaddq_u8(x, vshrq_n_u8(x, 4)), m4);
}

void bnn_bconv_patch(const bnn_layer *l, const uint32_t *patch, uint32_t *out, int32_t *sums) {
  const int n = BNN_PATCH_WORDS(l), tail = n & 3;
  const int32_t bits = l->k_h * l->k_w * l->in_c;
  const uint32_t *w = (const uint32_t *)l->weights;
  const uint8x16_t m1 = vdupq_n_u8(0x55), m2 = vdupq_n_u8(0x33), m4 = vdupq_n_u8(0x0f);
  const mve_pred16_t last = vctp32q((uint32_t)tail);
  uint32_t word = 0;
  for (int oc = 0; oc < l->out_c; ++oc) {
    const uint32_t *p = patch;
    uint32_t neg = 0;
    for (int left = n >> 2; left > 0; left -= 31) {        /* bytes hold 31 vectors */
      uint8x16_t bytes = vdupq_n_u8(0);
      for (const uint32_t *end = p + 4 * (left < 31 ? left : 31); p < end; p += 4, w += 4) {
        bytes = vaddq_u8(bytes, byte_counts(vreinterpretq_u8_u32(
                                                veorq_u32(vldrwq_u32(p), vldrwq_u32(w))),
                                            m1, m2, m4));
      }
      neg = vaddvaq_u8(neg, bytes);
    }
    if (tail) {
      neg = vaddvaq_u8(neg, byte_counts(vreinterpretq_u8_u32(veorq_u32(
                                            vldrwq_z_u32(p, last), vldrwq_z_u32(w, last))),
                                        m1, m2, m4));
      w += tail;
    }
    const int32_t s = bits - 2 * (int32_t)neg;
    if (sums) {
      sums[oc] = s;
      continue;
    }
    word = (word >> 1) | ((uint32_t)(s - l->thresholds[oc]) & 0x80000000u);
    if ((oc & 31) == 31) {
      out[oc >> 5] = word;
    } else if (oc + 1 == l->out_c) {
      out[oc >> 5] = word >> (31 - (oc & 31));
    }
  }
}
#endif
