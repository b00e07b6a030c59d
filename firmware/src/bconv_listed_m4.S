/* Ternary binary-conv inner kernel for Cortex-M4/M7/M55 (Thumb-2 with DSP): up to 32
 * ternary filters (bconv_sparse.c) against one gathered patch, the output bits packed
 * into one word. Only each filter's stored words are visited, three at a time through
 * the carry-save adder of bconv_block_m4.S, the last 1-2 of each list one by one.
 *
 *   typedef struct { const uint16_t *index; const uint32_t *w; const uint16_t *counts;
 *                    const int32_t *nonzeros, *t; } bnn_ternary_cursor;
 *   uint32_t bnn_ternary_block_m4(const uint32_t *patch, bnn_ternary_cursor *c, int count);
 *
 * Filter i: counts = (full, partial) with full + partial <= 30 (bytes would overflow
 * beyond); S = nonzeros - 2 * (popcount(patch[index] ^ sign) over the full words +
 * popcount((patch[index] ^ sign) & nonzero) over the partial ones); bit i of the result
 * is 1 (= -1) iff S < t. The cursor advances past the filters. 32 and 37 instructions
 * per 3 words, about 30 per filter. Example: bconv_sparse.c calls it per 32 filters. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#include "bnn_popcount_m4.inc"
  .syntax unified
  .thumb
  .text


  .macro TOTAL                      @ lr = sum of the bytes of r11; r11 = 0
  and lr, r11, #0x00ff00ff
  and r11, r11, #0xff00ff00
  add lr, lr, r11, lsr #8
  add lr, lr, lr, lsl #16
  lsr lr, lr, #16
  movs r11, #0
  .endm

  .macro LOAD3                      @ r4, r5, r6 = patch words of the next 3 entries
  ldrh r4, [r1], #2
  ldrh r5, [r1], #2
  ldrh r6, [r1], #2
  ldr r4, [r0, r4, lsl #2]
  ldr r5, [r0, r5, lsl #2]
  ldr r6, [r0, r6, lsl #2]
  .endm

  .macro BYTES1                     @ byte counts of r4 added to r11
  NIBBLES r4, r5, r8, r9
  BYTES r4, r5, r10
  add r11, r11, r4
  .endm

  .global bnn_ternary_block_m4
  .type bnn_ternary_block_m4, %function
  .thumb_func
bnn_ternary_block_m4:
  push {r4-r11, lr}
  ldr r4, [r1, #16]                 @ t
  add r5, r4, r2, lsl #2            @ t + count
  ldr r6, [r1, #8]                  @ counts
  ldr r7, [r1, #12]                 @ nonzeros
  movs r3, #0
  sub sp, sp, #4                    @ [sp, #24]: partial words of the filter
  push {r1, r3, r4, r5, r6, r7}     @ [sp]: cursor, output bits, t, t + count, counts, nonzeros
  ldr r2, [r1, #4]                  @ w
  ldr r1, [r1, #0]                  @ index
  mov r8, #0x55555555
  mov r9, #0x33333333
  mov r10, #0x0f0f0f0f
0:                                  @ next filter
  ldr r12, [sp, #16]
  ldrh r3, [r12], #2                @ full words
  ldrh r4, [r12], #2                @ partial words
  str r12, [sp, #16]
  str r4, [sp, #24]
  movs r11, #0
  subs r3, r3, #3                   @ r3 = full words left - 3
  blt 2f
1:
  LOAD3
  ldmia r2!, {r7, r12, lr}
  eor r4, r4, r7
  eor r5, r5, r12
  eor r6, r6, lr
  COUNT3 r11, r8, r9, r10
  subs r3, r3, #3
  bge 1b
2:
  adds r3, r3, #3                   @ the last 0-2 full words
  beq 3f
5:
  ldrh r4, [r1], #2
  ldr r4, [r0, r4, lsl #2]
  ldr r5, [r2], #4
  eor r4, r4, r5
  BYTES1
  subs r3, r3, #1
  bne 5b
3:
  ldr r3, [sp, #24]
  subs r3, r3, #3                   @ partial words
  blt 4f
6:
  LOAD3
  ldmia r2!, {r7, r12}
  eor r4, r4, r7
  and r4, r4, r12
  ldmia r2!, {r7, r12}
  eor r5, r5, r7
  and r5, r5, r12
  ldmia r2!, {r7, r12}
  eor r6, r6, r7
  and r6, r6, r12
  COUNT3 r11, r8, r9, r10
  subs r3, r3, #3
  bge 6b
4:
  adds r3, r3, #3
  beq 7f
8:
  ldrh r4, [r1], #2
  ldr r4, [r0, r4, lsl #2]
  ldmia r2!, {r5, r6}
  eor r4, r4, r5
  and r4, r4, r6
  BYTES1
  subs r3, r3, #1
  bne 8b
7:
  TOTAL                             @ lr = popcount
  ldr r12, [sp, #20]
  ldr r4, [r12], #4                 @ nonzeros
  str r12, [sp, #20]
  ldr r12, [sp, #8]
  ldr r5, [r12], #4                 @ t
  str r12, [sp, #8]
  sub r4, r4, r5
  sub r4, r4, lr, lsl #1            @ S - t: negative iff the output bit is 1
  and r4, r4, #0x80000000
  ldr r5, [sp, #4]
  orr r5, r4, r5, lsr #1
  str r5, [sp, #4]
  ldr r4, [sp, #12]
  cmp r12, r4
  bne 0b
  ldr r12, [sp]                     @ the cursor, advanced
  str r1, [r12, #0]
  str r2, [r12, #4]
  ldr r4, [sp, #16]
  str r4, [r12, #8]
  ldr r4, [sp, #20]
  str r4, [r12, #12]
  ldr r4, [sp, #8]
  str r4, [r12, #16]
  mov r0, r5
  add sp, sp, #28
  pop {r4-r11, pc}
  .size bnn_ternary_block_m4, . - bnn_ternary_block_m4
#endif
