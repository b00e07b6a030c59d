/* bnnprune C runtime: bit-packed binary neural network inference in C99.
 *
 * Activations are packed per pixel (NHWC) into 32-bit words as LCE packs them:
 * bit c % 32 of word c / 32 is 1 for -1 and 0 for +1; unused bits are 0.
 * A binary filter is stored as one bit stream over its patch: bit tap * in_c + c
 * (tap = ky * k_w + kx), 1 for -1, padded with zero words to BNN_PATCH_WORDS, a
 * multiple of 3 words (the kernels add up three words at a time). When in_c is a
 * multiple of 32 this is LCE's OHWI packing; otherwise the taps follow each other
 * without padding bits (16 channels: two taps per word), so no word is half empty.
 * The kernels gather each output pixel's input patch into the same bit stream.
 * The model data (layer descriptors, weights, integer thresholds, test vectors)
 * comes from converters/c_export.py. No dynamic allocation: the caller passes an
 * arena of BNN_ARENA_WORDS words.
 */
#ifndef BNN_H
#define BNN_H

#include <stdint.h>

#define BNN_WORDS(channels) (((channels) + 31) / 32)
/* words of one filter's (or one gathered patch's) bit stream: ceil(bits / 96) * 3 */
#define BNN_PATCH_WORDS(l) (((l)->k_h * (l)->k_w * (l)->in_c + 95) / 96 * 3)

typedef enum {
  BNN_CONV_FIRST = 0,  /* int8 input (pixel - 128), int16 weights in {-1,0,1}, threshold -> bits */
  BNN_BCONV = 1,       /* packed input, XNOR-popcount, threshold -> packed output */
  BNN_MAXPOOL = 2,     /* max of +-1 = AND of the packed "-1" bits */
  BNN_OUTPUT_CONV = 3, /* packed input -> int32 sums S; logit = scale * S + offset */
  BNN_SBCONV = 4,      /* SBNN weights {alpha, beta}: connection lists, sbconv.c */
  BNN_INPUT_SLICES = 5, /* int8 input (pixel - 128) -> packed bit slices; weights: kept bits */
  BNN_BCONV_PAIRS = 6,  /* BNN_BCONV on 16 input channels, two output pixels at a time: each
                         * filter word k holds tap k's 16 channels in both halves (bit
                         * 32 k + c and 32 k + 16 + c), words padded to a multiple of 3 */
  BNN_BCONV_MASKED = 7  /* ternary BNN_BCONV, no zero padding: each filter's bit stream as
                         * 3 sign words, 3 nonzero masks, 3 signs...; thresholds hold
                         * t - nonzeros (bconv_masked.c) */
} bnn_op;

typedef struct {
  uint8_t op;
  uint16_t in_h, in_w, in_c, out_h, out_w, out_c;
  uint8_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  /* value around the input for "same" padding: for BNN_CONV_FIRST the int8 code,
   * for packed inputs 1 (= +1, bits 0) or 0 (zero padding: the tap adds nothing) */
  int8_t pad_value;
  /* first conv: int16 OHWI, each filter padded to an even count (pairs for SMLAD);
   * binary: out_c filter bit streams of BNN_PATCH_WORDS words; ternary: see below */
  const void *weights;
  /* Ternary layers (zeros from unstructured pruning; 0 for binary layers). Word k
   * of a filter's bit stream is empty (all weights zero: stored nowhere, skipped),
   * full (no zero: its sign word) or partial (sign word and a mask word, 1 where
   * nonzero). Filter oc stores counts[2 oc] full words, then counts[2 oc + 1]
   * (sign, mask) pairs, in weights; index lists their word numbers k in the same
   * order. nonzeros[oc] counts its nonzero weights. */
  const uint16_t *counts;
  const uint16_t *index;
  const int32_t *nonzeros;
  const int32_t *thresholds;  /* output +1 iff S >= threshold */
  const float *scale, *offset;
  /* BNN_SBCONV (sbconv.c): weights = the gaps between the layer's connections, filter
   * after filter in patch order (ky, c, kx), in a Rice code of parameter rice_k;
   * connections: their number; output -1 (bit 1) iff (S_B * 2^32 + ratio * S_1 <
   * thresholds64) XOR the channel's bit in flips */
  const uint32_t *flips;
  const int64_t *thresholds64;
  int64_t ratio;
  uint32_t connections;
  uint8_t rice_k;
} bnn_layer;

typedef struct {
  uint16_t num_layers;
  const bnn_layer *layers;
  uint32_t input_size, num_classes;
  uint32_t half_words;        /* words of each ping-pong half of the arena */
} bnn_model;

/* Gathers the input bits under the kernel at output pixel (oy, ox) into the bit
 * stream patch (BNN_PATCH_WORDS words; "+1" padding = bits 0). Returns 0, or, for a
 * pixel whose kernel overlaps zero padding, writes mask (1 = inside) and returns 1. */
int bnn_gather_patch(const bnn_layer *l, const uint32_t *in, int oy, int ox, uint32_t *patch,
                     uint32_t *mask);

/* Optimized binary conv of one gathered patch against every filter: packs the
 * output bits into out (thresholds) or writes the int32 sums S (output conv). */
void bnn_bconv_patch(const bnn_layer *l, const uint32_t *patch, uint32_t *out, int32_t *sums);
/* BNN_BCONV_MASKED layers (bconv_masked.c), thresholds only. */
void bnn_bconv_patch_masked(const bnn_layer *l, const uint32_t *patch, uint32_t *out);
/* The same for ternary layers (skips empty words) and for patches with a mask. */
void bnn_bconv_patch_sparse(const bnn_layer *l, const uint32_t *patch, const uint32_t *mask,
                            uint32_t *out, int32_t *sums);
/* Two patches without mask of a ternary layer (thresholds only): their output words. */
void bnn_bconv_pair_sparse(const bnn_layer *l, const uint32_t *a, const uint32_t *b,
                           uint32_t *out_a, uint32_t *out_b);

/* Layers. patch: scratch of BNN_PATCH_WORDS words (binary; twice that with zero
 * padding or zero weights: a mask, or two pixels' patches); the first conv's scratch
 * (the arena's other half) holds its even k_h * k_w * in_c int16 values or its padded
 * input image (c_export sizes the halves). */
void bnn_conv_first(const bnn_layer *l, const int8_t *in, uint32_t *out, void *patch);
void bnn_bconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums,
                 uint32_t *patch);
/* BNN_BCONV_PAIRS (bconv_pair.c); patch: (k_h * k_w + 2) / 3 * 3 words */
void bnn_bconv2d_pairs(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *patch);
void bnn_maxpool(const bnn_layer *l, const uint32_t *in, uint32_t *out);
/* scratch: the byte map of the padded input, its channel sums, the decoded connection
 * offsets and the connections per filter (c_export sizes it) */
void bnn_sbconv2d(const bnn_layer *l, const uint32_t *in, uint32_t *out, uint32_t *scratch);
/* CBNN input: the kept bits (uint8 bit numbers in l->weights, out_c / in_c per channel)
 * of every pixel byte, packed in (channel, bit) order; a 0 bit is -1, so packed bit 1. */
void bnn_input_slices(const bnn_layer *l, const int8_t *in, uint32_t *out);

/* The input pixel (iy * in_w + ix) under tap (ky, kx) of output pixel (oy, ox) in
 * *pixel; returns 0 if the tap lies in the padding. Example: bconv2d_ref.c. */
static inline int bnn_tap(const bnn_layer *l, int oy, int ox, int ky, int kx, int *pixel) {
  const int iy = oy * l->stride_h - l->pad_top + ky, ix = ox * l->stride_w - l->pad_left + kx;
  *pixel = iy * l->in_w + ix;
  return iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w;
}

/* Reference kernels (KERNEL=ref): every weight and input decoded to -1, 0 or +1 and
 * multiplied; slow and obvious, the tests compare the optimized kernels with them. */
void bnn_conv_first_ref(const bnn_layer *l, const int8_t *in, uint32_t *out);
void bnn_bconv2d_ref(const bnn_layer *l, const uint32_t *in, uint32_t *out, int32_t *sums);

/* Runs the model on one int8 input; writes the int32 sums and float logits of
 * the last layer and returns the argmax. arena: BNN_ARENA_WORDS words (two halves
 * of model->half_words, then the largest patch). */
int bnn_run(const bnn_model *model, const int8_t *input, uint32_t *arena, int32_t *sums,
            float *logits);

/* Called around each inference (and after each layer with -DBNN_PROFILE); the
 * instruction-count plugin reports the count each time it runs. */
void bnn_mark(void);

#endif
