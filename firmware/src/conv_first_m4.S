/* First-layer inner kernel for Cortex-M4/M7/M55 (Thumb-2 with DSP) and the 3x3
 * grayscale kernel: up to 32 filters of 5 int16 pairs against one patch of 5 pairs,
 * the output bits packed into one word.
 *
 *   uint32_t bnn_conv_first5_m4(const uint32_t *patch, const uint32_t **w,
 *                               const int32_t *t, int count);
 *
 * S = the sum of 9 input codes times weights in {-1, 0, +1}: one SMUAD and four
 * SMLAD (two 16x16 multiply-adds each) with the patch in registers and the filter
 * loaded by one LDM; bit i of the result is 1 (= -1) iff S < t[i]. 12 instructions per
 * filter. *w advances past the last filter. Example: conv_first.c calls it for each
 * 32 filters of a 3x3x1 first conv. */
#ifndef __arm__
  .section .note.GNU-stack, "", %progbits   /* host builds: no executable stack */
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  .syntax unified
  .thumb
  .text
  .global bnn_conv_first5_m4
  .type bnn_conv_first5_m4, %function
  .thumb_func
bnn_conv_first5_m4:
  push {r4-r11, lr}
  mov r9, r2                        @ t
  add r10, r2, r3, lsl #2           @ t + count
  str r1, [sp, #-4]!                @ &w
  ldr lr, [r1]                      @ w
  ldr r12, [r0, #16]                @ patch pairs x0..x4 in r0..r3, r12
  ldmia r0, {r0, r1, r2, r3}
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
  .size bnn_conv_first5_m4, . - bnn_conv_first5_m4
#endif
