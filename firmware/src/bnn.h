/* bnnprune C runtime: bit-packed binary neural network inference in C99.
 *
 * Activations are packed per pixel (NHWC) into 32-bit words as LCE packs them:
 * bit c % 32 of word c / 32 is 1 for -1 and 0 for +1; unused bits are 0.
 * Weights use the same layout, OHWI. The model data (layer descriptors, packed
 * weights, integer thresholds, test vectors) comes from converters/c_export.py.
 * No dynamic allocation: the caller passes an arena of BNN_ARENA_WORDS words.
 */
#ifndef BNN_H
#define BNN_H

#include <stdint.h>

#define BNN_WORDS(channels) (((channels) + 31) / 32)

typedef enum {
  BNN_CONV_FIRST = 0,  /* int8 input (pixel - 128), weights in {-1,0,1}, threshold -> bits */
  BNN_BCONV = 1,       /* packed input, XNOR-popcount, threshold -> packed output */
  BNN_MAXPOOL = 2,     /* max of +-1 = AND of the packed "-1" bits */
  BNN_OUTPUT_CONV = 3  /* packed input -> int32 sums S; logit = scale * S + offset */
} bnn_op;

enum { BNN_EMPTY = 0, BNN_FULL = 1, BNN_PARTIAL = 2 };  /* = words stored per slot */

typedef struct {
  uint8_t op;
  uint16_t in_h, in_w, in_c, out_h, out_w, out_c;
  uint8_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  /* value around the input for "same" padding: for BNN_CONV_FIRST the int8 code,
   * for packed inputs 1 (= +1, bits 0) or 0 (zero padding: the tap is skipped) */
  int8_t pad_value;
  const void *weights;        /* int8 OHWI (first conv), packed uint32 OHWI, or a ternary stream */
  /* Ternary layers (zeros from unstructured pruning; 0 for binary layers): each
   * filter is a sequence of slots, one per (tap, input word), with a 2-bit class
   * (bits 2s..2s+1 of classes[s / 16] of the filter's ceil(slots / 16) words):
   * BNN_EMPTY slots are all zero, stored nowhere and skipped; BNN_FULL slots have no
   * zero and store the sign word; BNN_PARTIAL slots store the sign word, then a word
   * with 1 where the weight is nonzero. weights + starts[oc] is filter oc's stream;
   * nonzeros[oc] counts its nonzero weights. */
  const uint32_t *classes;
  const uint32_t *starts;
  const int32_t *nonzeros;
  const int32_t *thresholds;  /* output +1 iff S >= threshold */
  const float *scale, *offset;
} bnn_layer;

typedef struct {
  uint16_t num_layers;
  const bnn_layer *layers;
  uint32_t input_size, num_classes;
  uint32_t half_words;        /* words of each ping-pong half of the arena */
} bnn_model;

/* Integer sum S of output channel oc at output pixel (oy, ox) of a binary conv. */
int32_t bnn_bconv_sum(const bnn_layer *l, const uint32_t *in, int oy, int ox, int oc);
/* Copies the input words under the kernel at (oy, ox) to patch (k_h * k_w * words
 * words; 0 for taps in "+1" padding) and returns 1, or returns 0 if a tap lies in
 * zero padding (then use bnn_bconv_sum). */
int bnn_gather_patch(const bnn_layer *l, const uint32_t *in, int oy, int ox, uint32_t *patch);
/* S of output channel oc from a gathered patch: one straight XNOR-popcount loop. */
int32_t bnn_bconv_sum_patch(const bnn_layer *l, const uint32_t *patch, int oc);
/* The same, computed bit by bit from +-1 values: the reference the tests compare. */
int32_t bnn_bconv_sum_ref(const bnn_layer *l, const uint32_t *in, int oy, int ox, int oc);

/* patch: scratch of k_h * k_w * in_c bytes (first conv) or k_h * k_w * BNN_WORDS(in_c) words */
void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out, int8_t *patch);
void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *patch);
void bnn_maxpool(const bnn_layer *l, const uint32_t *in, uint32_t *out);
void bnn_output_conv(const bnn_layer *l, const uint32_t *in, int32_t *sums, uint32_t *patch);

/* Runs the model on one int8 input; writes the int32 sums and float logits of
 * the last layer and returns the argmax. arena: BNN_ARENA_WORDS words (two halves
 * of model->half_words, then the largest patch). */
int bnn_run(const bnn_model *model, const int8_t *input, uint32_t *arena, int32_t *sums,
            float *logits);

#endif
