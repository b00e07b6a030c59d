/* Example app: runs the test vectors embedded in model_data.c, prints each
 * prediction and "N passed, M failed", and returns M (under QEMU semihosting the
 * exit status of the emulator). A test passes when all int32 sums of the last
 * layer equal the ones computed in Python. */
#include <string.h>

#include "bnn.h"
#include "model_data.h"
#include "print.h"

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
    print("test "), print_int(t), print(": class "), print_int(best), print(" (label ");
    print_int(bnn_test_labels[t]), print(ok ? ") ok\n" : ") MISMATCH\n");
    if (ok) {
      ++passed;
    } else {
      ++failed;
    }
  }
  print_int(passed), print(" passed, "), print_int(failed), print(" failed\n");
  return failed;
}
