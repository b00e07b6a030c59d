/* Popcount that suits each core (see ../shared/reference/firmware.md section 6):
 * Cortex-M4/M7 have no popcount instruction and __builtin_popcount becomes a
 * libgcc call, so the default is an inline SWAR popcount, which GCC -O3 also
 * vectorizes with Helium (MVE) on Cortex-M55. -DBNN_POPCOUNT_BUILTIN selects the
 * compiler builtin (one instruction on hosts with POPCNT). */
#ifndef BNN_POPCOUNT_H
#define BNN_POPCOUNT_H

#include <stdint.h>

static inline int32_t bnn_popcount(uint32_t x) {
#ifdef BNN_POPCOUNT_BUILTIN
  return __builtin_popcount(x);
#else
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0f0f0f0fu;
  return (int32_t)((x * 0x01010101u) >> 24);
#endif
}

#endif
