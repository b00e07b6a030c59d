"""Reference BNNs written so that Larq Compute Engine keeps them binary.

Conventions every builder follows (why: ``../shared/reference/lce.md``):

- the first layer is a ``QuantConv2D`` with binary weights and a float input
  (no input quantizer): LCE runs it as a float ``CONV_2D``;
- every other binary layer is a ``QuantConv2D`` with ``ste_sign`` input and
  kernel quantizers and ``weight_clip``. Fully connected layers are written
  as convolutions (a ``k x k`` valid conv over the whole feature map, then
  ``1 x 1`` convs), because LCE turns ``QuantDense`` into a float
  ``FULLY_CONNECTED`` while it bit-packs convolutions;
- ``padding="same"`` always comes with ``pad_values=1.0``, and the order is
  conv -> BatchNorm -> max-pool, which LCE fuses into one ``LceBconv2d`` with
  a binary max-pool after it;
- the classifier ends in BatchNorm (no bias) and a softmax.

Binary convs are named ``conv2``, ``conv3``... (``s2b1_conv`` in the ResNet), the
classifier ``fc1``, ``fc2``..., each BatchNorm after its layer (``conv2_bn``), so
per-layer pruning targets can name them.

``width`` scales every hidden channel count (rounded, at least 1), so tests can
build tiny versions of the big networks.

Example::

    from bnnprune_tf import models
    model = models.build("mnist_bnn", input_shape=(28, 28, 1), num_classes=10)
    small = models.build("binarynet", input_shape=(32, 32, 3), width=0.125)
    print(models.names())
"""

from __future__ import annotations

from typing import Callable, Sequence

import larq as lq
import tensorflow as tf

from bnnprune_tf.errors import ModelError

layers = tf.keras.layers

BINARY = dict(
    input_quantizer="ste_sign",
    kernel_quantizer="ste_sign",
    kernel_constraint="weight_clip",
    use_bias=False,
)
FIRST = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)

_BUILDERS: dict[str, Callable[..., tf.keras.Model]] = {}


def register(name: str):
    """Decorator that adds a model builder to :func:`build` under ``name``."""

    def wrap(fn):
        _BUILDERS[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    """Names of the reference models."""
    return sorted(_BUILDERS)


def copy_model(model: tf.keras.Model) -> tf.keras.Model:
    """A new model of the same architecture and weights (masks too); ``model`` is left alone.

    Example::

        backup = copy_model(model)
    """
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def load(path, compile: bool = False) -> tf.keras.Model:
    """``tf.keras.models.load_model`` with a clear :class:`ModelError` for a missing, corrupt
    or wrong file.

    Example::

        model = models.load("runs/demo/model.keras")
    """
    import os

    if not os.path.isfile(path):
        raise ModelError(f"model file {path} not found: pass a .keras/.h5 file saved with "
                         "model.save (e.g. by `bnnprune train`)")
    try:
        return tf.keras.models.load_model(path, compile=compile)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError):
        raise                   # a distributed run lost a worker: not the file's fault
    except Exception as e:      # zipfile, h5py, JSON and Keras raise many kinds
        raise ModelError(f"{path} is not a readable Keras model: the file is corrupt or not a "
                         f".keras/.h5 file ({type(e).__name__}: {str(e)[:200]}). Save the model "
                         "again with model.save('model.keras')") from None


def build(name: str, input_shape: Sequence[int], num_classes: int = 10, width: float = 1.0,
          seed: int | None = 0, **kwargs) -> tf.keras.Model:
    """Build reference model ``name`` (see :func:`names`).

    ``seed`` (default 0) makes the initial weights reproducible: it seeds Python,
    NumPy and TensorFlow, as ``tf.keras.utils.set_random_seed`` does. ``None``
    leaves the global random state as it is.

    Raises:
        ModelError: unknown name, a width <= 0, or an input too small for the net.
    """
    if name not in _BUILDERS:
        raise ModelError(f"unknown model {name!r}: use one of {', '.join(names())}")
    if width <= 0:
        raise ModelError(f"width must be > 0, got {width}")
    if num_classes < 2:
        raise ModelError(f"num_classes must be >= 2, got {num_classes}")
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    try:
        return _BUILDERS[name](tuple(input_shape), num_classes, width, **kwargs)
    except TypeError as e:
        import inspect

        options = list(inspect.signature(_BUILDERS[name]).parameters)[3:]
        raise ModelError(f"{name} has no option {', '.join(map(repr, kwargs))} ({e}); its "
                         f"options: {', '.join(options) or 'none'}") from None
    except ValueError as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(
            f"{name} cannot be built for input_shape={tuple(input_shape)}: {e}. "
            "Use a larger input or a model with fewer poolings."
        ) from e


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _bn(x, scale=False):
    """BatchNorm named after the layer it follows (``conv2`` -> ``conv2_bn``)."""
    name = x._keras_history.layer.name + "_bn"
    return layers.BatchNormalization(momentum=0.9, scale=scale, name=name)(x)


def _bconv(x, filters, kernel_size=3, strides=1, padding="same", name=None):
    pad = {"pad_values": 1.0} if padding == "same" else {}
    return lq.layers.QuantConv2D(filters, kernel_size, strides=strides, padding=padding,
                                 name=name, **pad, **BINARY)(x)


def _first_conv(x, filters, kernel_size=3, strides=1, padding="same"):
    pad = {"pad_values": 1.0} if padding == "same" else {}
    return lq.layers.QuantConv2D(filters, kernel_size, strides=strides, padding=padding,
                                 name="conv_first", **pad, **FIRST)(x)


def _binary_classifier(x, hidden: Sequence[int], num_classes: int):
    """Fully connected head as binary convolutions: k x k valid, then 1 x 1."""
    for i, units in enumerate(list(hidden) + [num_classes]):
        kernel = tuple(x.shape[1:3]) if i == 0 else (1, 1)
        x = _bconv(x, units, kernel, padding="valid", name=f"fc{i + 1}")
        x = _bn(x, scale=i == len(hidden))  # the logits need a learnable scale
    x = layers.Flatten()(x)
    return layers.Activation("softmax", name="softmax")(x)


@register("mnist_bnn")
def mnist_bnn(input_shape, num_classes, width):
    """Small conv BNN for 28x28 images: 32-64-128 filters, 3 max-pools."""
    inputs = tf.keras.Input(input_shape)
    x = _first_conv(inputs, _w(32, width))
    x = _bn(x)
    x = layers.MaxPool2D(2)(x)
    for i, filters in enumerate((64, 128)):
        x = _bconv(x, _w(filters, width), name=f"conv{i + 2}")
        x = _bn(x)
        x = layers.MaxPool2D(2)(x)
    outputs = _binary_classifier(x, [], num_classes)
    return tf.keras.Model(inputs, outputs, name="mnist_bnn")


@register("binary_mlp")
def binary_mlp(input_shape, num_classes, width, hidden=(256, 256)):
    """Binary MLP 784-256-256-10 written as convolutions so LCE keeps it binary.

    The input image is reshaped to 1x1xN; each dense layer is a 1x1 QuantConv2D.
    """
    inputs = tf.keras.Input(input_shape)
    x = layers.Reshape((1, 1, -1))(inputs)
    x = lq.layers.QuantConv2D(_w(hidden[0], width), 1, name="conv_first", **FIRST)(x)
    x = _bn(x)
    for i, units in enumerate(hidden[1:]):
        x = _bconv(x, _w(units, width), 1, padding="valid", name=f"dense{i + 2}")
        x = _bn(x)
    outputs = _binary_classifier(x, [], num_classes)
    return tf.keras.Model(inputs, outputs, name="binary_mlp")


def _vgg(inputs, blocks: Sequence[Sequence[int]], width):
    """VGG body: each block is a list of conv widths followed by a 2x2 max-pool."""
    x, n = inputs, 0
    for block in blocks:
        for filters in block:
            n += 1
            if n == 1:
                x = _first_conv(x, _w(filters, width))
            else:
                x = _bconv(x, _w(filters, width), name=f"conv{n}")
            x = _bn(x)
        x = layers.MaxPool2D(2)(x)
    return x


@register("binarynet")
def binarynet(input_shape, num_classes, width):
    """BinaryNet for CIFAR-10 (Courbariaux et al. 2016; the CBNN baseline):
    128C3-128C3-MP-256C3-256C3-MP-512C3-512C3-MP-FC1024-FC1024-FC10."""
    inputs = tf.keras.Input(input_shape)
    x = _vgg(inputs, [[128, 128], [256, 256], [512, 512]], width)
    outputs = _binary_classifier(x, [_w(1024, width), _w(1024, width)], num_classes)
    return tf.keras.Model(inputs, outputs, name="binarynet")


@register("vgg_small")
def vgg_small(input_shape, num_classes, width):
    """VGG-Small as in IR-Net/ETB: 128-128-MP-256-256-MP-512-512-MP-FC10."""
    inputs = tf.keras.Input(input_shape)
    x = _vgg(inputs, [[128, 128], [256, 256], [512, 512]], width)
    outputs = _binary_classifier(x, [], num_classes)
    return tf.keras.Model(inputs, outputs, name="vgg_small")


@register("binary_nin")
def binary_nin(input_shape, num_classes, width, dropout=0.0):
    """Binary Network-in-Network, 9 conv layers (XNOR-Net-PyTorch ``nin.py``).

    Float 5x5 stem, 7 binary convs, a float 1x1 classifier conv and global
    average pooling. ``dropout`` > 0 adds the original's dropout before the
    two binary convs that follow a pooling stage.
    """
    inputs = tf.keras.Input(input_shape)
    x = _first_conv(inputs, _w(192, width), 5)
    x = _bn(x)
    plan = [
        (160, 1), (96, 1), "maxpool",
        (192, 5, "drop"), (192, 1), (192, 1), "avgpool",
        (192, 3, "drop"), (192, 1),
    ]
    n = 1
    for step in plan:
        if step == "maxpool":
            x = layers.MaxPool2D(3, strides=2, padding="same")(x)
            continue
        if step == "avgpool":
            x = layers.AveragePooling2D(3, strides=2, padding="same")(x)
            continue
        if len(step) == 3 and dropout > 0:
            x = layers.Dropout(dropout)(x)
        n += 1
        x = _bconv(x, _w(step[0], width), step[1], name=f"conv{n}")
        x = _bn(x)
    x = lq.layers.QuantConv2D(num_classes, 1, name="conv_last")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="binary_nin")


@register("binary_alexnet")
def binary_alexnet(input_shape, num_classes, width):
    """Binary AlexNet adapted to 32x32 inputs (XNOR-Net-PyTorch ``alexnet.py``
    with a 5x5 stride-1 stem): 96-MP-256-MP-384-384-256-MP-FC4096-FC4096-FC10."""
    inputs = tf.keras.Input(input_shape)
    x = _first_conv(inputs, _w(96, width), 5)
    x = _bn(x)
    x = layers.MaxPool2D(3, strides=2)(x)
    x = _bconv(x, _w(256, width), 5, name="conv2")
    x = _bn(x)
    x = layers.MaxPool2D(3, strides=2)(x)
    for i, filters in enumerate((384, 384, 256)):
        x = _bconv(x, _w(filters, width), name=f"conv{i + 3}")
        x = _bn(x)
    x = layers.MaxPool2D(3, strides=2)(x)
    outputs = _binary_classifier(x, [_w(4096, width), _w(4096, width)], num_classes)
    return tf.keras.Model(inputs, outputs, name="binary_alexnet")


@register("resnet18")
def resnet18(input_shape, num_classes, width, stages=(2, 2, 2, 2)):
    """Bi-Real-style ResNet-18 for 32x32 inputs: every binary 3x3 conv has its
    own identity shortcut (``x + BN(bconv(x))``); downsampling shortcuts are
    average-pool + float 1x1 conv + BN; float stem and classifier."""
    inputs = tf.keras.Input(input_shape)
    channels = _w(64, width)
    x = _first_conv(inputs, channels)
    x = _bn(x)
    for s, blocks in enumerate(stages):
        out_channels = _w(64 * 2**s, width)
        for b in range(2 * blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            shortcut = x
            tag = f"s{s + 1}b{b + 1}"
            if stride != 1 or out_channels != channels:
                shortcut = layers.AveragePooling2D(stride, padding="same")(x)
                shortcut = tf.keras.layers.Conv2D(out_channels, 1, use_bias=False,
                                                  name=f"{tag}_shortcut")(shortcut)
                shortcut = _bn(shortcut)
            y = _bconv(x, out_channels, 3, strides=stride, name=f"{tag}_conv")
            y = _bn(y)
            x = layers.Add(name=f"{tag}_add")([y, shortcut])
            channels = out_channels
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(num_classes, name="fc1")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="resnet18")
