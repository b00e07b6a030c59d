/* Binary conv inner kernel for Cortex-M4/M7 (ARMv7E-M, Thumb-2): up to 32 filters
 * against one gathered patch, the output bits packed into one word.
 *
 *   uint32_t bnn_bconv_block_m4(const uint32_t *patch, const uint32_t *end,
 *                               const uint32_t **w, const int32_t *t, int count,
 *                               int32_t bits);
 *
 * patch..end: the patch, 3 to 30 words (a multiple of 3); *w: the first filter (the
 * filters follow each other, each end - patch words; advanced past the last);
 * t: their thresholds. Bit i of the result is 1 (= -1) iff filter i's
 * S = bits - 2 * popcount(patch XOR filter) < t[i]. The same operations as
 * bconv_patch.c (carry-save adder over 3 words, nibble and byte counts, masks in
 * registers), written out because GCC spills registers in them: 27 instructions per
 * 3 words (two LDM) and 16 per filter. Example: bconv_patch.c calls it for each 32 filters.
 *
 *   uint32_t bnn_bconv_masked_m4(...same arguments...);
 *
 * The same for a ternary layer in the masked layout (BNN_BCONV_MASKED, bconv_masked.c):
 * each 3 sign words of a filter are followed by 3 words with 1 where the weight is
 * nonzero, and S = bits - 2 * popcount((patch XOR sign) AND mask) with bits = 0 (the
 * thresholds hold t - nonzeros): 31 instructions per 3 words. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#include "bnn_popcount_m4.inc"
  .syntax unified
  .thumb
  .text

  .macro BCONV_BLOCK name, masked
  .section .text.\name, "ax", %progbits    @ its own section: unused, the linker drops it
  .global \name
  .type \name, %function
  .thumb_func
\name:
  BLOCK_ENTRY r6                 @ [sp]: patch, &w, t + count, bits, output bits
1:                                  @ next filter
  FILTER_BYTES \masked
  and r4, r2, #0x00ff00ff           @ bytes -> halfwords -> 2 * popcount = r2 >> 15
  and r2, r2, #0xff00ff00
  add r2, r4, r2, lsr #8
  add r2, r2, r2, lsl #16
  ldrd r5, r4, [sp, #8]             @ t + count, bits
  ldr r6, [r3], #4                  @ t
  sub r4, r4, r6
  sub r4, r4, r2, lsr #15           @ S - t: negative iff the output bit is 1
  and r4, r4, #0x80000000
  ldr r6, [sp, #16]
  orr r6, r4, r6, lsr #1
  str r6, [sp, #16]
  cmp r3, r5
  bne 1b
  ldr r2, [sp, #4]
  str lr, [r2]                      @ *w = past the last filter
  mov r0, r6
  add sp, sp, #20
  pop {r4-r11, pc}
  .size \name, . - \name
  .endm

  BCONV_BLOCK bnn_bconv_block_m4, 0
  BCONV_BLOCK bnn_bconv_masked_m4, 1
#endif
