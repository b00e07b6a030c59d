/* Ternary binary-conv inner kernel for two output pixels, Cortex-M4/M7/M55 (Thumb-2
 * with DSP): bconv_listed_m4.S's filters (up to 32) against two gathered patches A and
 * B, each filter's list walked once for both, so the word numbers, sign words, counts,
 * thresholds and loop steps are shared; the output bits of each pixel packed into
 * one word.
 *
 *   uint64_t bnn_ternary_pair_m4(const uint32_t *a, const uint32_t *b,
 *                                bnn_ternary_cursor *c, int count);
 *
 * Filter i: counts = (full, partial) with full + partial <= 30 (bytes would overflow
 * beyond); bit i of the low result word (pixel A) and of the high one (pixel B) is 1
 * (= -1) iff that pixel's S = nonzeros - 2 * popcount < t, the popcount as in
 * bconv_listed_m4.S. The cursor advances past the filters. For both pixels: 60
 * instructions per 3 full words (69 partial), 26 per leftover word (29), about 31 per
 * filter. Example: bconv_sparse.c calls it for each 32 filters of each pixel pair. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#include "bnn_popcount_m4.inc"
  .syntax unified
  .thumb
  .text

  .macro WORD2 a, b, partial        @ a, b = next listed word of A, B ^ sign (& nonzero)
  ldrh r12, [r1], #2
  ldr \a, [r0, r12, lsl #2]
  ldr \b, [lr, r12, lsl #2]
  ldr r12, [r2], #4
  eor \a, \a, r12
  eor \b, \b, r12
  .if \partial
  ldr r12, [r2], #4
  and \a, \a, r12
  and \b, \b, r12
  .endif
  .endm

  .macro LIST2 partial              @ r3 listed words into the byte counts r10 (A), r11 (B)
  subs r3, r3, #3
  blt 2f
1:
  WORD2 r4, r7, \partial
  WORD2 r5, r8, \partial
  WORD2 r6, r9, \partial
  COUNT3_I r10, r4, r5, r6, r12
  COUNT3_I r11, r7, r8, r9, r12
  subs r3, r3, #3
  bge 1b
2:
  adds r3, r3, #3                   @ the last 0-2 words
  beq 3f
4:
  WORD2 r4, r7, \partial
  COUNT1_I r10, r4, r12
  COUNT1_I r11, r7, r12
  subs r3, r3, #1
  bne 4b
3:                                  @ r3 = 0
  .endm

  .global bnn_ternary_pair_m4
  .type bnn_ternary_pair_m4, %function
  .thumb_func
bnn_ternary_pair_m4:
  push {r4-r11, lr}
  ldr r4, [r2, #8]                  @ counts
  ldr r5, [r2, #12]                 @ nonzeros
  ldr r6, [r2, #16]                 @ t
  add r7, r6, r3, lsl #2            @ t + count
  movs r8, #0
  movs r9, #0
  mov r10, r2
  sub sp, sp, #8                    @ [sp, #28]: partial words, [sp, #32]: nonzeros - t
  push {r4-r10}                     @ [sp]: counts, nonzeros, t, t + count, bits A, B, cursor
  mov lr, r1                        @ patch B
  ldr r1, [r2, #0]                  @ index
  ldr r2, [r2, #4]                  @ w
.Lfilter:
  ldm sp, {r4, r5, r6}
  ldr r3, [r4], #4                  @ full | partial << 16
  ldr r7, [r5], #4                  @ nonzeros
  ldr r8, [r6], #4                  @ t
  stm sp, {r4, r5, r6}
  sub r7, r7, r8
  lsr r8, r3, #16
  strd r8, r7, [sp, #28]
  uxth r3, r3
  movs r10, #0
  movs r11, #0
  LIST2 0                           @ full words
  ldr r3, [sp, #28]
  cbnz r3, .Lpartial
.Ltotal:
  usad8 r10, r10, r3                @ popcounts: sums of the bytes (r3 = 0)
  usad8 r11, r11, r3
  ldr r4, [sp, #32]
  sub r10, r4, r10, lsl #1          @ S - t: negative iff the output bit is 1
  sub r11, r4, r11, lsl #1
  ldrd r6, r7, [sp, #16]
  and r10, r10, #0x80000000
  and r11, r11, #0x80000000
  orr r6, r10, r6, lsr #1
  orr r7, r11, r7, lsr #1
  strd r6, r7, [sp, #16]
  ldrd r4, r5, [sp, #8]             @ t, t + count
  cmp r4, r5
  bne .Lfilter
  ldr r12, [sp, #24]                @ the cursor, advanced
  str r1, [r12, #0]
  str r2, [r12, #4]
  ldm sp, {r3, r4, r5}
  str r3, [r12, #8]
  str r4, [r12, #12]
  str r5, [r12, #16]
  mov r0, r6
  mov r1, r7
  add sp, sp, #36
  pop {r4-r11, pc}
.Lpartial:
  LIST2 1                           @ partial words
  b .Ltotal
  .size bnn_ternary_pair_m4, . - bnn_ternary_pair_m4
#endif
