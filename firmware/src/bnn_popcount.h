/* Popcounts without a popcount instruction (Cortex-M4/M7 have none, and
 * __builtin_popcount is a libgcc call there; see ../shared/reference/firmware.md 6).
 *
 * bnn_popcount3(a, b, c) adds three words with a carry-save adder (Harley-Seal):
 * ones = a ^ b ^ c and twos = majority(a, b, c) hold each bit position's count, so
 * popcount(a) + popcount(b) + popcount(c) = popcount(ones) + 2 * popcount(twos). It
 * returns these counts per byte (each <= 24): up to ten results add up in one word
 * before bnn_bytes_total. Example: bnn_bytes_total(bnn_popcount3(~0u, 1u, 0u)) == 33. */
#ifndef BNN_POPCOUNT_H
#define BNN_POPCOUNT_H

#include <stdint.h>

#define BNN_M1 0x55555555u
#define BNN_M2 0x33333333u
#define BNN_M4 0x0f0f0f0fu

/* The masks, in registers: kernels load them with bnn_masks() so that the compiler
 * keeps them there and uses ARM's shifted operands ((x >> 1) & m1 in one instruction)
 * instead of a shift and an AND with an immediate. */
typedef struct { uint32_t m1, m2, m4; } bnn_masks_t;

static inline bnn_masks_t bnn_masks(void) {
  bnn_masks_t m = {BNN_M1, BNN_M2, BNN_M4};
  __asm__("" : "+r"(m.m1), "+r"(m.m2), "+r"(m.m4));   /* opaque: not folded into immediates */
  return m;
}

/* count of ones of every 4-bit field */
static inline uint32_t bnn_nibbles(uint32_t x, bnn_masks_t m) {
  x = x - ((x >> 1) & m.m1);
  return (x & m.m2) + ((x >> 2) & m.m2);
}

static inline uint32_t bnn_popcount3m(uint32_t a, uint32_t b, uint32_t c, bnn_masks_t m) {
  const uint32_t u = a ^ b;
  const uint32_t n = bnn_nibbles(u ^ c, m) + (bnn_nibbles((a & b) | (u & c), m) << 1);  /* <= 12 */
  return (n & m.m4) + ((n >> 4) & m.m4);
}

static inline uint32_t bnn_popcount3(uint32_t a, uint32_t b, uint32_t c) {
  const bnn_masks_t m = {BNN_M1, BNN_M2, BNN_M4};
  return bnn_popcount3m(a, b, c, m);
}

/* sum of the four bytes of x (via two 16-bit fields, as the sum may exceed 255) */
static inline int32_t bnn_bytes_total(uint32_t x) {
  x = (x & 0x00ff00ffu) + ((x >> 8) & 0x00ff00ffu);
  return (int32_t)((x * 0x00010001u) >> 16);
}

static inline int32_t bnn_popcount(uint32_t x) { return bnn_bytes_total(bnn_popcount3(x, 0, 0)); }

#endif
