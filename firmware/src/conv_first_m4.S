/* First-layer inner kernel for Cortex-M4/M7/M55 (Thumb-2 with DSP), 3x3 kernel on a
 * one-channel image: up to 32 filters against a run of 3x3 windows along an image
 * row, each window's output bits packed into one word.
 *
 *   void bnn_conv_first3x3_m4(bnn_first_run *run);    (conv_first.c)
 *
 * run->x: the first window's top-left input code, in_w: the row stride (the image
 * width, or 3 for a window gathered with its padding), step: bytes to the next
 * window (stride_w), pixels: windows in the run; w, t, count: the filters, their
 * thresholds and how many; out: the first window's output word, out_step: bytes to
 * the next. Per window, 9 loads and 4 PKHBT build the 5 int16 pairs of the patch in
 * registers; per filter, one LDM loads its 5 weight pairs and one SMUAD and four
 * SMLAD (two 16x16 multiply-adds each) give S, the sum of input code times weight
 * in {-1, 0, +1}; bit i of the word is 1 (= -1) iff S < t[i]. 12 instructions per
 * filter, about 40 per window. Example: conv_first.c calls it once per block of 32
 * filters and run of windows inside the image, and once per border window. */
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
  @ bnn_first_run fields (byte offsets); t_end and shift are filled in here
  .equ X, 0
  .equ IN_W, 4
  .equ STEP, 8
  .equ W, 12
  .equ T, 16
  .equ COUNT, 20
  .equ OUT, 24
  .equ OUT_STEP, 28
  .equ PIXELS, 32
  .equ T_END, 36
  .equ SHIFT, 40
bnn_conv_first3x3_m4:
  push {r4-r11, lr}
  str r0, [sp, #-4]!                @ [sp] = run
  ldr r1, [r0, #COUNT]
  ldr r2, [r0, #T]
  add r2, r2, r1, lsl #2
  str r2, [r0, #T_END]
  rsb r1, r1, #32
  str r1, [r0, #SHIFT]              @ the word's bits are its top count bits
1:                                  @ next window
  ldr r12, [sp]
  ldr r0, [r12, #X]
  ldr r1, [r12, #IN_W]
  ldr r4, [r12, #STEP]
  ldr lr, [r12, #W]
  ldr r9, [r12, #T]
  ldr r10, [r12, #T_END]
  add r4, r0, r4
  str r4, [r12, #X]                 @ the next window
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
2:                                  @ next filter
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
  bne 2b
  ldr r12, [sp]
  ldr r4, [r12, #SHIFT]
  ldr r5, [r12, #OUT]
  ldr r6, [r12, #OUT_STEP]
  lsr r11, r11, r4
  str r11, [r5]
  add r5, r5, r6
  str r5, [r12, #OUT]
  ldr r4, [r12, #PIXELS]
  subs r4, r4, #1
  str r4, [r12, #PIXELS]
  bne 1b
  add sp, sp, #4
  pop {r4-r11, pc}
  .size bnn_conv_first3x3_m4, . - bnn_conv_first3x3_m4
#endif
