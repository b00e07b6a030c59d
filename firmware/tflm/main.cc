// Runs a bnnprune exact-int8 BNN with stock TensorFlow Lite Micro and checks it
// against the test vectors that `bnnprune convert --to tflm-c` embedded in
// model_data.cc (expected logits computed by the numpy integer reference, which
// tflite-micro and tf.lite reproduce bit for bit).
//
// Prints one line per test vector and "N passed, M failed"; returns M, so under
// semihosting or on a host build the exit status is the test result.
#include <string.h>

#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

// Largest allowed difference of an int8 logit from the reference. 0 for the
// reference kernels; an optimized-kernel build (e.g. CMSIS-NN) may round the last
// layer's requantization differently and can pass -DBNNPRUNE_LOGIT_TOLERANCE=1.
#ifndef BNNPRUNE_LOGIT_TOLERANCE
#define BNNPRUNE_LOGIT_TOLERANCE 0
#endif

namespace {

alignas(16) uint8_t tensor_arena[kTensorArenaSize];

// Exactly the builtins the export uses (BNNPRUNE_USES_* come from model_data.h).
TfLiteStatus RegisterOps(tflite::MicroMutableOpResolver<BNNPRUNE_NUM_OPS>& resolver) {
#ifdef BNNPRUNE_USES_PADV2
  if (resolver.AddPadV2() != kTfLiteOk) return kTfLiteError;
#endif
#ifdef BNNPRUNE_USES_CONV_2D
  if (resolver.AddConv2D() != kTfLiteOk) return kTfLiteError;
#endif
#ifdef BNNPRUNE_USES_MAX_POOL_2D
  if (resolver.AddMaxPool2D() != kTfLiteOk) return kTfLiteError;
#endif
#ifdef BNNPRUNE_USES_RESHAPE
  if (resolver.AddReshape() != kTfLiteOk) return kTfLiteError;
#endif
#ifdef BNNPRUNE_USES_DEQUANTIZE
  if (resolver.AddDequantize() != kTfLiteOk) return kTfLiteError;
#endif
  return kTfLiteOk;
}

// The int8 logit the output holds (for a float output: value / scale, exact
// because DEQUANTIZE computed scale * q).
int Logit(const TfLiteTensor* output, int c) {
#if BNNPRUNE_MODEL_OUTPUT_FLOAT
  const float q = output->data.f[c] / kOutputScale;
  return static_cast<int>(q < 0 ? q - 0.5f : q + 0.5f);
#else
  return output->data.int8[c];
#endif
}

}  // namespace

int main() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema version %d, this TFLM reads %d", model->version(),
                TFLITE_SCHEMA_VERSION);
    return 255;
  }
  static tflite::MicroMutableOpResolver<BNNPRUNE_NUM_OPS> resolver;
  if (RegisterOps(resolver) != kTfLiteOk) {
    MicroPrintf("registering the ops failed");
    return 255;
  }
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed: kTensorArenaSize %d is too small", kTensorArenaSize);
    return 255;
  }
  MicroPrintf("arena: %d of %d bytes used", static_cast<int>(interpreter.arena_used_bytes()),
              kTensorArenaSize);
  TfLiteTensor* input = interpreter.input(0);
  int passed = 0, failed = 0;
  for (int t = 0; t < kNumTests; ++t) {
    memcpy(input->data.int8, g_test_inputs[t], kInputSize);
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("test %d: Invoke failed", t);
      ++failed;
      continue;
    }
    const TfLiteTensor* output = interpreter.output(0);
    int best = 0, ok = 1;
    for (int c = 0; c < kNumClasses; ++c) {
      const int got = Logit(output, c);
      const int diff = got - g_test_logits[t][c];
      if (diff > BNNPRUNE_LOGIT_TOLERANCE || -diff > BNNPRUNE_LOGIT_TOLERANCE) ok = 0;
      if (got > Logit(output, best)) best = c;
    }
    MicroPrintf("test %d: class %d %s", t, best, ok ? "ok" : "MISMATCH");
    ok ? ++passed : ++failed;
  }
  MicroPrintf("%d passed, %d failed", passed, failed);
  return failed;
}
