/* Runs the layers of a model in order on two ping-pong halves of the arena, with
 * the optimized kernels or (-DBNN_REFERENCE) the reference ones. With -DBNN_PROFILE
 * it calls bnn_mark() after every layer, so the instruction-count plugin reports
 * each layer's cost. Only the kernels of the ops in BNN_OPS (model_data.h) are
 * called, so the linker leaves the others out of flash (--gc-sections). */
#include "bnn.h"
#include "model_data.h"   /* BNN_USES(op): the model has layers of that op */

int bnn_run(const bnn_model *model, const int8_t *input, uint32_t *arena, int32_t *sums,
            float *logits) {
  uint32_t *half[2] = {arena, arena + model->half_words};
  uint32_t *patch = arena + 2 * model->half_words;
  const uint32_t *src = 0;
  int cur = 0;
  for (int i = 0; i < model->num_layers; ++i) {
    const bnn_layer *l = &model->layers[i];
    int32_t *layer_sums = l->op == BNN_OUTPUT_CONV ? sums : 0;
#ifdef BNN_REFERENCE
    if (l->op == BNN_CONV_FIRST) bnn_conv_first_ref(l, input, half[cur]);
    if (l->op == BNN_BCONV || l->op == BNN_OUTPUT_CONV || l->op == BNN_BCONV_PAIRS ||
        l->op == BNN_BCONV_MASKED) {
      bnn_bconv2d_ref(l, src, half[cur], layer_sums);
    }
#else
    if (BNN_USES(BNN_CONV_FIRST) && l->op == BNN_CONV_FIRST) {
      bnn_conv_first(l, input, half[cur], half[cur ^ 1]);   /* the other half is free */
    }
    if (l->op == BNN_BCONV || l->op == BNN_OUTPUT_CONV || l->op == BNN_BCONV_MASKED) {
      bnn_bconv2d(l, src, half[cur], layer_sums, patch);
    }
    if (BNN_USES(BNN_BCONV_PAIRS) && l->op == BNN_BCONV_PAIRS) {
      bnn_bconv2d_pairs(l, src, half[cur], patch);
    }
#endif
    if (BNN_USES(BNN_MAXPOOL) && l->op == BNN_MAXPOOL) bnn_maxpool(l, src, half[cur]);
    if (BNN_USES(BNN_SBCONV) && l->op == BNN_SBCONV) bnn_sbconv2d(l, src, half[cur], patch);
    if (BNN_USES(BNN_INPUT_SLICES) && l->op == BNN_INPUT_SLICES) {
      bnn_input_slices(l, input, half[cur]);
    }
#ifdef BNN_PROFILE
    bnn_mark();
#endif
    if (l->op == BNN_OUTPUT_CONV) {
      int best = 0;
      for (uint32_t k = 0; k < model->num_classes; ++k) {
        const int c = (int)(k % l->out_c);
        logits[k] = l->scale[c] * (float)sums[k] + l->offset[c];
        if (logits[k] > logits[best]) best = (int)k;
      }
      return best;
    }
    src = half[cur];
    cur ^= 1;
  }
  return -1;
}
