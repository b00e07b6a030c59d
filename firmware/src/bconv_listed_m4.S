/* Ternary binary-conv inner kernel for Cortex-M4/M7 (ARMv7E-M, Thumb-2): the stored
 * words of one ternary filter (bconv_sparse.c) against a gathered patch, three at a
 * time through the same carry-save adder as bconv_block_m4.S, the last 1-2 one by one.
 *
 *   int32_t bnn_listed_m4(const uint32_t *patch, const uint16_t *index,
 *                         const uint32_t *w, int full, int partial);
 *
 * Returns popcount(patch[index[i]] ^ w[i]) summed over `full` full words (sign words),
 * plus popcount((patch[index[i]] ^ sign) & nonzero) over the next `partial` words
 * ((sign, nonzero) pairs after the sign words); full, partial <= 30 (bytes would
 * overflow). 32 and 37 instructions per 3 words. Example: bconv_sparse.c calls it
 * once per filter. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_ARCH_7EM__) && defined(__thumb2__)
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

  .global bnn_listed_m4
  .type bnn_listed_m4, %function
  .thumb_func
bnn_listed_m4:
  push {r4-r11, lr}
  ldr r12, [sp, #36]                @ partial
  mov r8, #0x55555555
  mov r9, #0x33333333
  mov r10, #0x0f0f0f0f
  movs r11, #0
  str r12, [sp, #-4]!
  subs r3, r3, #3                   @ full words: r3 = those left - 3
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
  TOTAL                             @ lr = popcount of the full words
  ldr r3, [sp], #4
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
  mov r12, lr
  TOTAL
  add r0, r12, lr
  pop {r4-r11, pc}
  .size bnn_listed_m4, . - bnn_listed_m4
#endif
