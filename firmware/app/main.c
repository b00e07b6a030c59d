/* Example app: runs the test vectors embedded in model_data.c, prints each
 * prediction and "N passed, M failed", and returns M (under QEMU semihosting the
 * exit status of the emulator). A test passes when all int32 sums of the last
 * layer equal the ones computed in Python. */
#include <stdio.h>
#include <string.h>

#include "bnn.h"
#include "model_data.h"

static uint32_t arena[BNN_ARENA_WORDS];
static int32_t sums[BNN_NUM_CLASSES];
static float logits[BNN_NUM_CLASSES];

/* Called before and after each inference (bnn.h); the instruction-count plugin marks it. */
__attribute__((noinline)) void bnn_mark(void) { __asm__ volatile(""); }

int main(void) {
  int passed = 0, failed = 0;
  for (int t = 0; t < BNN_NUM_TESTS; ++t) {
    bnn_mark();
    const int best = bnn_run(&bnn_model_data, bnn_test_inputs[t], arena, sums, logits);
    bnn_mark();
    const int ok = memcmp(sums, bnn_test_sums[t], sizeof sums) == 0;
    printf("test %d: class %d (label %d) %s\n", t, best, bnn_test_labels[t],
           ok ? "ok" : "MISMATCH");
    if (ok) {
      ++passed;
    } else {
      ++failed;
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed;
}
