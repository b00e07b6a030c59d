"""Model data for the C runtime: LCE bit packing, descriptors, clear errors."""

import numpy as np
import pytest
import tensorflow as tf
import larq as lq

from bnnprune_tf import masks, models, prune
from bnnprune_tf.errors import ConversionError
from converters import c_export, fold
from test_fold import irregular_bnn, randomize_batchnorm
from test_firmware import slot_masks, ternary_bnn


def test_pack_bits_follows_lce():
    rng = np.random.default_rng(0)
    signs = rng.choice([-1, 1], (3, 45))
    words = c_export.pack_bits(signs)
    assert words.shape == (3, 2) and words.dtype == np.uint32
    for row, packed in zip(signs, words):
        for c, v in enumerate(row):
            assert (int(packed[c // 32]) >> (c % 32)) & 1 == (v == -1)
    assert not (int(words[0, 1]) >> 13)                      # padding bits are 0


def test_render_describes_every_layer_and_the_exact_test_sums():
    model = irregular_bnn()
    folded = fold.fold(model)
    codes = np.random.default_rng(1).integers(-128, 128, (2, 28, 28, 1)).astype(np.int8)
    header, source, info = c_export.render(folded, codes, np.array([3, 4]))
    assert source.count("{.op = ") == 6
    assert "static const uint32_t c3[" in source                # ternary slot classes
    assert ".pad_value = 0" in source and ".stride_h = 2" in source
    expected = folded.output.sums(folded.hidden(codes)).reshape(2, -1)
    first = source.split("bnn_test_sums[2][10] = {\n  {")[1].split("}")[0]
    np.testing.assert_array_equal(np.array(first.split(", "), int), expected[0])
    assert "#define BNN_ARENA_WORDS" in header and info["tests"] == 2


def test_reshape_between_binary_layers_is_a_clear_error():
    inputs = tf.keras.Input((4, 4, 1))
    x = lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", use_bias=False)(inputs)
    x = tf.keras.layers.Reshape((1, 1, 32), name="regroup")(x)
    x = lq.layers.QuantConv2D(3, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign")(x)
    with pytest.raises(ConversionError, match="regroup"):
        c_export.render(fold.fold(tf.keras.Model(inputs, x)))


def test_unsupported_layer_is_named():
    inputs = tf.keras.Input((28, 28, 1))
    x = models.build("binary_mlp", (28, 28, 1), 10, width=0.1)(inputs)
    with pytest.raises(ConversionError, match="binary_mlp"):
        c_export.write(tf.keras.Model(inputs, x), "/nonexistent/never_written")


def _decode(t, shape):
    """Weights back from a ternary stream, written independently of the exporter."""
    o, kh, kw, cin = shape
    nw = -(-cin // 32)
    slots = kh * kw * nw
    per_filter = -(-slots // 16)
    out = np.zeros(shape, int)
    for f in range(o):
        pos = int(t["starts"][f])
        for slot in range(slots):
            kind = (int(t["classes"][f * per_filter + slot // 16]) >> (2 * (slot % 16))) & 3
            tap, word = divmod(slot, nw)
            for c in range(32 * word, min(32 * word + 32, cin)):
                if kind == 0 or (kind == 2 and not (int(t["stream"][pos + 1]) >> (c % 32)) & 1):
                    continue
                negative = (int(t["stream"][pos]) >> (c % 32)) & 1
                out[f, tap // kw, tap % kw, c] = -1 if negative else 1
            pos += kind
    return out


def test_ternary_stream_round_trips_and_stores_only_nonempty_slots():
    rng = np.random.default_rng(2)
    shape = (5, 3, 3, 70)                                      # 3 words, the last of 6 channels
    mask = slot_masks((3, 3, 70, 5), rng).transpose(3, 0, 1, 2)
    weights = (rng.choice([-1, 1], shape) * mask).astype(np.int8)
    t = c_export.ternary_stream(weights)
    np.testing.assert_array_equal(_decode(t, shape), weights)
    np.testing.assert_array_equal(t["nonzeros"], (weights != 0).reshape(5, -1).sum(1))
    nonzero = c_export.pack_bits(np.where(weights != 0, -1, 1))
    full = c_export.pack_bits(-np.ones(70))
    partial = ((nonzero != 0) & (nonzero != full)).sum()
    assert len(t["stream"]) == (nonzero == full).sum() + 2 * partial
    assert (nonzero == 0).sum() > 10 and partial > 10          # all three kinds occur
    with pytest.raises(ConversionError, match="ternary weights"):
        c_export.ternary_stream(weights * 2)


def test_weights_pruned_in_word_blocks_save_flash():
    model = randomize_batchnorm(models.build("mnist_bnn", (28, 28, 1), 10, width=1.0))
    dense = c_export.render(fold.fold(model))[2]["weight_bytes"]
    masked = masks.prunable(model)
    rng = np.random.default_rng(0)
    for name in ("conv2", "conv3", "fc1"):
        layer = masked.get_layer(name)
        layer.set_masks(weights=slot_masks(layer.weight_mask.shape, rng, empty=0.5, full=0.5))
    blocks = c_export.render(fold.fold(prune.strip_pruning(masked, keep_weight_masks=True)))[2]["weight_bytes"]
    assert blocks < 0.8 * dense           # 50 % of the slots empty; the rest pays 2 bits of class


def test_masked_models_deploy_shrunk_and_ternary():
    model = ternary_bnn(seed=1)
    weight_masks = {l.name: l.weight_mask.numpy() for l in model.layers if masks.is_masked(l)}
    assert prune.strip_pruning(model, keep_weight_masks=True) is model   # weight masks only
    masked = prune.prune_filters(model, "l1", ratio=0.25)          # in place
    deployed = prune.strip_pruning(masked, keep_weight_masks=True)
    assert not any(masks.is_masked(l) and l.channel_mask.numpy().min() == 0
                   for l in deployed.layers)
    assert deployed.get_layer("zero_pad").kernel.shape[-1] == 27          # 36 * 0.75
    x = (np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)) / 127.5 - 1).astype(np.float32)
    np.testing.assert_allclose(fold.keras_logits(deployed, x), fold.keras_logits(masked, x),
                               rtol=1e-5, atol=1e-5)
    folded = fold.fold(deployed)
    zeros = (folded.layers[3].weights == 0).mean()                 # one_pad, shrunk + ternary
    assert 0.3 < zeros < 0.8 and (weight_masks["one_pad"] == 0).mean() > 0.3
    np.testing.assert_allclose(folded.logits(folded.quantize_input(x)),
                               fold.keras_logits(masked, x), rtol=1e-4, atol=1e-4)
