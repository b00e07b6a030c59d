"""Deploying SBNN ({alpha, beta} weights): LCE exact with the conv kept binary, the C
runtime bit-exact under QEMU with work and weight bytes following the connections, TFLM
refused clearly."""

import dataclasses

import numpy as np
import pytest

from bnnprune_tf import layer_facts, models, sbnn
from bnnprune_tf.errors import ConversionError
from converters import c_export, firmware, fold, lce, tflm
from converters import sbnn as deploy
from test_fold import randomize_batchnorm
from conftest import require_tools


def sbnn_model(share: float, seed: int = 0, width: float = 0.25):
    """mnist_bnn with conv2, conv3 in the domain: random tau, phi, BatchNorm, and about
    ``share`` of connections."""
    model = sbnn.to_sbnn(models.build("mnist_bnn", (28, 28, 1), 10, width=width, seed=seed))
    rng = np.random.RandomState(seed)
    for layer in sbnn.sbnn_layers(model):
        layer.tau.assign(rng.uniform(0.3, 1.5))
        layer.phi.assign(rng.uniform(-0.6, 0.6))
        latent = layer_facts.latent_kernel(layer)
        latent.assign(np.where(rng.rand(*latent.shape) < share, 0.5, -0.5))
    randomize_batchnorm(model, seed)
    return model


@pytest.fixture(scope="module")
def images(mnist_small):
    return mnist_small.arrays("test", limit=64)


def test_lce_keeps_the_conv_binary_and_matches_keras(images):
    x, y = images
    model = sbnn_model(0.3)
    flatbuffer = lce.convert(model)
    info = lce.inspect(flatbuffer)
    assert info.ops["LceBconv2d"] == 3 and info.ops["CONV_2D"] == 1     # only the first conv
    assert [c["channels_out"] for c in info.binary_convs][:2] == [17, 33]  # + the all-ones filter
    check = lce.verify(model, flatbuffer, x, y, atol=1e-3)
    assert check.argmax_agreement == 1.0


def test_folded_integer_model_equals_keras(images):
    x, _ = images
    model = sbnn_model(0.1, seed=1)
    folded = fold.fold(model)
    assert [type(l).__name__ for l in folded.layers].count("AffineConv") == 2
    np.testing.assert_allclose(folded.logits(folded.quantize_input(x)),
                               fold.keras_logits(model, x), atol=1e-3)


def test_c_runtime_bit_exact_on_m4_with_work_and_bytes_following_connections(images, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")
    x, y = images
    counts, weight_bytes = {}, {}
    for share in (0.5, 0.05):
        directory = tmp_path / f"share{share}"
        info = c_export.write(sbnn_model(share, seed=2, width=0.5), directory, samples=x[:3],
                              labels=y[:3])
        if share == 0.05:                 # the sums of the last conv, bit for bit
            result = firmware.run(directory, "mps2-an386")
            assert result["passed"] == 3 and result["failed"] == 0
        prof = firmware.profile(directory, "mps2-an386", tmp_path / f"build{share}")
        counts[share] = sum(l["instructions"] for l in prof["layers"] if l["op"] == "affine")
        weight_bytes[share] = info["weight_bytes"]
    assert counts[0.05] < 0.5 * counts[0.5]
    assert weight_bytes[0.05] < 0.7 * weight_bytes[0.5]      # + per-channel thresholds


def test_connection_stream_codes_the_gaps_across_filters_without_counts():
    weights = np.zeros((3, 3, 3, 40), np.int8)                   # patch: 360 positions
    weights[0, 0, 0, 0] = weights[0, 0, 1, 5] = weights[0, 2, 2, 39] = 1
    weights[2, 0, 0, 1] = 1                                       # filter 1: none
    conv = deploy.AffineConv("c", weights, (1, 1), "same", 1, 1.0, 0, np.ones(3, np.int8),
                             np.zeros(3, np.int64))
    stream = deploy.connection_stream(conv)
    np.testing.assert_array_equal(stream["counts"], [3, 0, 1])
    # positions filter * 360 + (ky * 40 + c) * 3 + kx: 0, 16, 359, 723; gaps - 1 = 0, 15,
    # 342, 363; the fewest bits with Rice parameter 7: 8 + 8 + (2 ones, 0, 7 bits) * 2 = 36
    assert (stream["connections"], stream["k"], stream["bits"]) == (4, 7, 36)
    code = ("0" + "0000000" + "0" + "1111000" + "11" + "0" + "0110101"
            + "11" + "0" + "1101011")                              # bit i = character i
    assert [int(w) for w in stream["words"]] == [int(code[:32][::-1], 2),
                                                 int(code[32:][::-1], 2), 0]
    rng = np.random.RandomState(5)                 # 5 % random connections: near the entropy
    weights = (rng.rand(64, 3, 3, 64) < 0.05).astype(np.int8)     # (5.7 bits a connection)
    conv = dataclasses.replace(conv, weights=weights)
    assert deploy.connection_stream(conv)["bits"] / weights.sum() < 6.0


def test_c_decisions_equal_the_folded_comparison_for_every_sign():
    rng = np.random.RandomState(0)
    signs = np.repeat([-1, 0, 1], 40).astype(np.int8)
    t = rng.randint(-2 ** 40, 2 ** 40, size=signs.size, dtype=np.int64)
    t[::7] = np.repeat([0, 1], 60)[::7]                      # the edges of a sign 0
    conv = deploy.AffineConv("c", np.ones((signs.size, 1, 1, 1), np.int8), (1, 1), "valid",
                             1, 1.0, 0, signs, t)
    thresholds, flips = deploy.decisions(conv)
    u = np.concatenate([rng.randint(-2 ** 41, 2 ** 41, size=500, dtype=np.int64),
                        t, t - 1, 1 - t, -t, [0, 1, -1]])[:, None]
    folded = signs.astype(np.int64) * u >= t                       # AffineConv's +1
    c_runtime = (u < thresholds) == flips                          # sbconv.c's +1
    np.testing.assert_array_equal(c_runtime, folded)


def test_tflm_refuses_sbnn_layers_saying_why():
    with pytest.raises(ConversionError, match="conv2, conv3 have SBNN weights.*C runtime"):
        tflm.to_tflm(sbnn_model(0.3))
