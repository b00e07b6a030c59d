/* Runs the layers of a model in order on two ping-pong halves of the arena. */
#include "bnn.h"

int bnn_run(const bnn_model *model, const int8_t *input, uint32_t *arena, int32_t *sums,
            float *logits) {
  uint32_t *half[2] = {arena, arena + model->half_words};
  uint32_t *patch = arena + 2 * model->half_words;
  const uint32_t *src = 0;
  int cur = 0;
  for (int i = 0; i < model->num_layers; ++i) {
    const bnn_layer *l = &model->layers[i];
    switch (l->op) {
      case BNN_CONV_FIRST: bnn_conv_first(l, input, half[cur], (int8_t *)patch); break;
      case BNN_BCONV: bnn_bconv2d(l, src, half[cur], patch); break;
      case BNN_MAXPOOL: bnn_maxpool(l, src, half[cur]); break;
      case BNN_OUTPUT_CONV: {
        bnn_output_conv(l, src, sums, patch);
        int best = 0;
        for (uint32_t k = 0; k < model->num_classes; ++k) {
          const int c = (int)(k % l->out_c);
          logits[k] = l->scale[c] * (float)sums[k] + l->offset[c];
          if (logits[k] > logits[best]) best = (int)k;
        }
        return best;
      }
      default: return -1;
    }
    src = half[cur];
    cur ^= 1;
  }
  return -1;
}
