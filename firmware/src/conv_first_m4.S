/* First-layer inner kernel for Cortex-M4/M7/M55 (Thumb-2 with DSP), 3x3 kernel on a
 * one-channel image: up to 32 filters against one 3x3 window, the output bits
 * packed into one word.
 *
 *   uint32_t bnn_conv_first3x3_m4(const int8_t *x, int in_w, const uint32_t **w,
 *                                 const int32_t *t, int count);
 *
 * x: the window's top-left input code, in_w: the row stride (the image width, or 3
 * for a window gathered with its padding). 9 loads and 4 PKHBT build the 5 int16
 * pairs of the patch in registers; per filter, one LDM loads its 5 weight pairs and
 * one SMUAD and four SMLAD (two 16x16 multiply-adds each) give S, the sum of input
 * code times weight in {-1, 0, +1}; bit i of the result is 1 (= -1) iff S < t[i].
 * 12 instructions per filter. *w advances past the last filter. Example:
 * conv_first.c calls it for each 32 filters of each output pixel. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  .syntax unified
  .thumb
  .text
  .global bnn_conv_first3x3_m4
  .type bnn_conv_first3x3_m4, %function
  .thumb_func
bnn_conv_first3x3_m4:
  push {r4-r11, lr}
  ldr r4, [sp, #36]                 @ count
  mov r9, r3                        @ t
  add r10, r3, r4, lsl #2           @ t + count
  str r2, [sp, #-4]!                @ &w
  ldr lr, [r2]                      @ w
  add r5, r0, r1                    @ image rows 1 and 2 of the window
  add r6, r5, r1
  ldrsb r1, [r0, #1]
  ldrsb r2, [r0, #2]
  ldrsb r0, [r0, #0]
  ldrsb r3, [r5, #0]
  pkhbt r0, r0, r1, lsl #16         @ pairs (p0, p1), (p2, p3), ...: r0..r3, r12
  pkhbt r1, r2, r3, lsl #16
  ldrsb r2, [r5, #1]
  ldrsb r3, [r5, #2]
  ldrsb r4, [r6, #0]
  ldrsb r12, [r6, #2]               @ p8 alone: its partner weight is 0
  pkhbt r2, r2, r3, lsl #16
  ldrsb r3, [r6, #1]
  pkhbt r3, r4, r3, lsl #16
  movs r11, #0                      @ packed output bits
1:
  ldmia lr!, {r4, r5, r6, r7, r8}
  smuad r4, r0, r4
  smlad r4, r1, r5, r4
  smlad r4, r2, r6, r4
  smlad r4, r3, r7, r4
  smlad r4, r12, r8, r4
  ldr r5, [r9], #4
  sub r4, r4, r5                    @ S - t: negative iff the output bit is 1
  and r4, r4, #0x80000000
  orr r11, r4, r11, lsr #1
  cmp r9, r10
  bne 1b
  ldr r1, [sp], #4
  str lr, [r1]
  mov r0, r11
  pop {r4-r11, pc}
  .size bnn_conv_first3x3_m4, . - bnn_conv_first3x3_m4
#endif
