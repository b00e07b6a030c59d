/* Binary conv inner kernel for two output pixels of a 16-channel layer, Cortex-M4/M7
 * (and M55's Thumb-2): up to 32 filters against one pair patch (bconv_pair.c), the
 * two pixels' output bits packed into two words.
 *
 *   uint64_t bnn_bconv_pair_m4(const uint32_t *patch, const uint32_t *end,
 *                              const uint32_t **w, const int32_t *t, int count,
 *                              int32_t bits);
 *
 * patch..end: one word per tap, pixel A's 16 channels in the low half and pixel B's
 * in the high half (3 to 30 words, a multiple of 3); *w: the first filter, one word
 * per tap with its 16 channels in both halves (advanced past the last filter);
 * t: the thresholds; bits: taps * 16, the bits of one pixel. The loop over the words
 * is bconv_block_m4.S's (carry-save adder, byte counts); bytes 0-1 count pixel A,
 * bytes 2-3 pixel B, so one pass gives both popcounts. Bit i of the low result word
 * (pixel A) and of the high one (pixel B) is 1 (= -1) iff that pixel's
 * S = bits - 2 * popcount < t[i]. 27 instructions per 3 words, 20 per filter.
 * Example: bconv_pair.c calls it for each 32 filters of each pair of output pixels. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#include "bnn_popcount_m4.inc"
  .syntax unified
  .thumb
  .text
  .global bnn_bconv_pair_m4
  .type bnn_bconv_pair_m4, %function
  .thumb_func
bnn_bconv_pair_m4:
  BLOCK_ENTRY r6, r7             @ [sp]: patch, &w, t + count, bits, bits A, bits B
1:                                  @ next filter
  FILTER_BYTES
  and r4, r2, #0x00ff00ff           @ bytes -> halfwords: popcount B << 16 | popcount A
  and r2, r2, #0xff00ff00
  add r2, r4, r2, lsr #8
  ldr r4, [sp, #12]                 @ bits
  ldr r6, [r3], #4                  @ t
  sub r4, r4, r6                    @ bits - t
  uxth r5, r2
  sub r5, r4, r5, lsl #1            @ S_A - t: negative iff pixel A's bit is 1
  sub r4, r4, r2, lsr #15           @ S_B - t (popcount A < 2^15, so r2 >> 15 = 2 popcount B)
  ldrd r6, r7, [sp, #16]
  and r5, r5, #0x80000000
  and r4, r4, #0x80000000
  orr r6, r5, r6, lsr #1
  orr r7, r4, r7, lsr #1
  strd r6, r7, [sp, #16]
  ldr r5, [sp, #8]                  @ t + count
  cmp r3, r5
  bne 1b
  ldr r2, [sp, #4]
  str lr, [r2]                      @ *w = past the last filter
  mov r0, r6
  mov r1, r7
  add sp, sp, #24
  pop {r4-r11, pc}
  .size bnn_bconv_pair_m4, . - bnn_bconv_pair_m4
#endif
