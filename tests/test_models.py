import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import models
from bnnprune_tf.errors import ModelError

SHAPES = {"mnist_bnn": (28, 28, 1), "binary_mlp": (28, 28, 1)}


def small(name, classes=10):
    return models.build(name, SHAPES.get(name, (32, 32, 3)), classes, width=0.125)


@pytest.mark.parametrize("name", models.names())
def test_builds_and_predicts_a_distribution(name):
    model = small(name, classes=7)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *model.input_shape[1:])).astype("float32")
    y = model(x, training=False).numpy()
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", models.names())
def test_lce_friendly_conventions(name):
    model = small(name)
    quant = [l for l in model.layers if isinstance(l, lq.layers.QuantConv2D)]
    assert not any(isinstance(l, lq.layers.QuantDense) for l in model.layers)
    assert quant[0].name == "conv_first" and quant[0].input_quantizer is None
    binary = [l for l in quant if l.input_quantizer is not None]
    assert len(binary) >= 2
    for layer in binary:
        assert layer.kernel_quantizer.precision == 1 and layer.input_quantizer.precision == 1
        if layer.padding == "same":
            assert layer.pad_values == 1.0, layer.name
        # conv -> BatchNorm, so LCE fuses BN into the binary conv
        consumers = [n.outbound_layer for n in layer._outbound_nodes]
        assert [type(c) for c in consumers] == [tf.keras.layers.BatchNormalization], layer.name


def test_width_scales_channels():
    full = models.build("mnist_bnn", (28, 28, 1))
    half = models.build("mnist_bnn", (28, 28, 1), width=0.5)
    assert [l.filters for l in full.layers if hasattr(l, "filters")] == [32, 64, 128, 10]
    assert [l.filters for l in half.layers if hasattr(l, "filters")] == [16, 32, 64, 10]


def test_residual_model_has_adds():
    model = small("resnet18")
    adds = [l for l in model.layers if isinstance(l, tf.keras.layers.Add)]
    assert len(adds) == 16


def test_nin_has_nine_conv_layers():
    model = small("binary_nin")
    assert len([l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]) == 9


def test_bad_arguments():
    with pytest.raises(ModelError, match="unknown model 'resnet50': use one of"):
        models.build("resnet50", (32, 32, 3))
    with pytest.raises(ModelError, match="width must be > 0"):
        models.build("mnist_bnn", (28, 28, 1), width=0)
    with pytest.raises(ModelError, match="binary_alexnet cannot be built for input_shape=\\(8, 8, 1\\)"):
        models.build("binary_alexnet", (8, 8, 1))


def test_save_and_load_roundtrip(tmp_path):
    from bnnprune_tf import files

    model = small("mnist_bnn")
    path = files.save_model(model, tmp_path / "m.keras")
    loaded = tf.keras.models.load_model(path)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    assert not list(tmp_path.glob(".*partial*"))
