"""A Larq BNN as integer layers: binary convs with BatchNorm + sign folded into thresholds.

This is the one place where a Larq model is read layer by layer and turned into
integer arithmetic; the TFLM export (:mod:`converters.tflm`) and the C export
(:mod:`converters.c_export`) both start from :func:`fold`.

The math (``../shared/reference/firmware.md`` §8.2): a conv sums its integer
inputs ``x`` (``+-1`` activations, or the int8 codes of the first layer's real
input) with the signs ``w`` of its weights, ``S = sum(w * x)``. Everything after
it up to the next sign (weight scale, bias, BatchNorm) is one affine map per
output channel, ``y = A*S + B``. Larq's sign maps 0 to +1, so
``sign(y) = +1  <=>  s*S >= t`` with ``s = sign(A)`` and ``t = ceil(-s*B/|A|)``.
Folding ``s`` into the weights leaves ``S' = sum(s*w * x) >= t``: a
:class:`BinaryConv`. Channels with ``A = 0`` (BatchNorm gamma 0) get zero
weights and the threshold 0 or 1 that gives their constant sign. The last conv
keeps ``A`` and ``B`` (an :class:`OutputConv`: real logits). A max-pool between
BatchNorm and the next sign commutes with the sign, so it runs on ``+-1``.

Supported, in a single chain: ``QuantConv2D`` (binary or ternary kernel, optionally
scaled per channel, sign input quantizer or no input quantizer for the first conv,
valid or same padding with ``pad_values`` 0 or 1, strides, bias), ``BatchNormalization``,
``MaxPool2D``, ``Flatten``/``Reshape``, ``Dropout`` (identity at inference), and a final
softmax (dropped: it does not change the argmax). Masked layers
(:mod:`bnnprune_tf.masks`) fold with their effective kernel, so pruned weights are 0
and pruned filters give constant outputs. Anything else raises
:class:`~bnnprune_tf.errors.ConversionError` naming the layer.

Example::

    import bnnprune_tf
    from bnnprune_tf import data, models
    from converters import fold

    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    folded = fold.fold(model)
    x, _ = data.load("mnist5k").arrays("test", limit=8)
    logits = folded.logits(folded.quantize_input(x))     # integer reference, real logits
"""

from __future__ import annotations

from dataclasses import dataclass

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, masks, sbnn
from bnnprune_tf.thresholds import batchnorm_affine
from bnnprune_tf.bitslice import BitSlice
from bnnprune_tf.errors import ConversionError

layers = tf.keras.layers

#: The model input is read as int8 codes ``v`` with real value ``INPUT_SCALE * (v + 0.5)``:
#: for images ``x = pixel/127.5 - 1`` (``bnnprune_tf.data``) that is ``v = pixel - 128``,
#: so every pixel level is exact, and so are -1 (v = -128) and the padding value +1
#: (v = 127). The half step is a per-channel constant of the first conv, folded into
#: its threshold or bias.
INPUT_SCALE = 2.0 / 255.0
INPUT_OFFSET = 0.5


@dataclass(frozen=True)
class Conv:
    """Fields shared by both conv kinds.

    ``weights`` are int8 OHWI in {-1, 0, +1}; ``pad_value`` is the integer written
    around the input when ``padding == "same"``; ``input_scale`` is the real value of
    one input step (1.0 for +-1 activations, :data:`INPUT_SCALE` for the model input,
    whose codes also carry :data:`INPUT_OFFSET`, already folded into the thresholds or
    offsets, so :meth:`sums` are plain integer sums).
    """

    name: str
    weights: np.ndarray
    strides: tuple[int, int]
    padding: str
    pad_value: int
    input_scale: float

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weights.shape[1:3])

    def sums(self, x: np.ndarray) -> np.ndarray:
        """Integer sums ``S[n, h, w, c] = sum(weights[c] * window)`` (int64)."""
        return conv_sums(x, self.weights, self.strides, self.padding, self.pad_value)


@dataclass(frozen=True)
class BinaryConv(Conv):
    """Conv + affine + sign: output ``+1`` where ``sums >= thresholds`` else ``-1``.

    The weights already carry ``sign(A)``; ``thresholds`` are int32 and lie in
    ``[-K-1, K+1]`` for the largest possible ``|S| = K``.
    """

    thresholds: np.ndarray = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.where(self.sums(x) >= self.thresholds, 1, -1).astype(np.int8)


@dataclass(frozen=True)
class OutputConv(Conv):
    """The last conv: real outputs ``scale * sums + offset`` (float64, per channel)."""

    scale: np.ndarray = None
    offset: np.ndarray = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sums(x) * self.scale + self.offset


@dataclass(frozen=True)
class MaxPool:
    """Max-pool on +-1 activations (``padding`` valid or same, as in Keras)."""

    name: str
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        if self.padding == "same":
            (t, b), (l, r) = same_padding(h, ph, sh), same_padding(w, pw, sw)
            x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-128)
            h, w = x.shape[1:3]
        ho, wo = (h - ph) // sh + 1, (w - pw) // sw + 1
        out = np.full((n, ho, wo, c), -128, x.dtype)
        for i in range(ph):
            for j in range(pw):
                out = np.maximum(out, x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw])
        return out


@dataclass(frozen=True)
class Reshape:
    """Flatten or reshape (row-major NHWC, so the data order does not change)."""

    name: str
    shape: tuple[int, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape((len(x), *self.shape))


@dataclass(frozen=True)
class BitSlices:
    """The model input's bit slices (:class:`bnnprune_tf.bitslice.BitSlice`): int8 codes
    ``v = pixel - 128`` -> ``+-1`` per kept bit of each channel, ``(channel, bit)`` order.
    The conv after it is binary: on a microcontroller its packed input is the pixel
    bytes, inverted (LCE packs -1 as bit 1) and masked to the kept bits."""

    name: str
    slices: tuple[int, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        pixels = np.asarray(x).astype(np.int64) + 128
        bits = (pixels[..., None] >> np.asarray(self.slices)) & 1       # [..., C, K]
        return (2 * bits - 1).reshape(*pixels.shape[:-1], -1).astype(np.int8)


@dataclass(frozen=True)
class Folded:
    """The integer form of a BNN: ``layers`` in order, the last one an :class:`OutputConv`
    (a Flatten after it is implied: :meth:`logits` are ``[N, classes]``)."""

    name: str
    input_shape: tuple[int, ...]
    input_scale: float
    layers: list
    dropped: list[str]

    @property
    def output(self) -> OutputConv:
        return self.layers[-1]

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.shapes()[-1]))

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape (without batch) of every layer, from a zero input."""
        x = np.zeros((1, *self.input_shape), np.int8)
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(tuple(x.shape[1:]))
        return out

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Real inputs in [-1, 1] -> the int8 codes the integer model reads
        (``pixel - 128`` for images normalized by ``bnnprune_tf.data``)."""
        x = np.asarray(x, np.float64)
        if x.shape[1:] != tuple(self.input_shape):
            raise ConversionError(f"inputs of shape {x.shape[1:]} do not fit the model input "
                                  f"{tuple(self.input_shape)}: pass a batch [N, *input_shape]")
        if isinstance(self.layers[0], BitSlices):       # raw pixels 0..255 -> pixel - 128
            if x.size and (x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.floor(x))):
                raise ConversionError("this model reads raw pixels (a BitSlice input): pass "
                                      "integers 0..255 (Dataset.pixels()), not normalized images")
            return (x - 128).astype(np.int8)
        return np.clip(np.round(x / self.input_scale - INPUT_OFFSET), -128, 127).astype(np.int8)

    def binary_cost(self) -> dict:
        """``binary_macs`` and ``binary_params`` the integer form computes: every conv with
        a +-1 input counts its nonzero weights (pruned ones are 0); an SBNN conv
        (:class:`AffineConv`) its connections plus the shared all-ones filter, once per
        output pixel. The cost a weight-level or SBNN model has on the C runtime.

        Example::

            fold(model).binary_cost()      # {"binary_macs": ..., "binary_params": ...}
        """
        macs = params = 0
        x = np.zeros((1, *self.input_shape), np.int8)
        for layer in self.layers:
            y = layer(x)
            if isinstance(layer, Conv) and layer.input_scale == 1.0:
                nonzero = int(np.count_nonzero(layer.weights))
                shared = int(np.prod(layer.weights.shape[1:])) \
                    if isinstance(layer, AffineConv) else 0
                macs += int(np.prod(y.shape[1:3])) * (nonzero + shared)
                params += nonzero
            x = y
        return {"binary_macs": macs, "binary_params": params}

    def hidden(self, x_int8: np.ndarray) -> np.ndarray:
        """The +-1 (int8) input of the last conv."""
        x = np.asarray(x_int8)
        for layer in self.layers[:-1]:
            x = layer(x)
        return x

    def logits(self, x_int8: np.ndarray) -> np.ndarray:
        """Real logits ``[N, classes]`` (float64) computed with integer sums."""
        return self.output(self.hidden(x_int8)).reshape(len(x_int8), -1)


def keras_logits(model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
    """``[N, classes]`` Keras outputs before a final softmax: what :meth:`Folded.logits`
    reproduces up to float rounding.

    Example::

        np.abs(keras_logits(model, x) - folded.logits(folded.quantize_input(x))).max()
    """
    last = model.layers[-1]
    if isinstance(last, layers.Activation) and last.activation is tf.keras.activations.softmax:
        model = tf.keras.Model(model.inputs, last.input)
    return np.asarray(model(np.asarray(x, np.float32), training=False)).reshape(len(x), -1)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding ``(before, after)`` of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_sums(x, weights, strides=(1, 1), padding="valid", pad_value=0) -> np.ndarray:
    """``sum(weights[o] * window)`` for an NHWC integer input and OHWI integer weights.

    Exact: the products are summed as float64 integers (below 2**53), then cast.

    Example::

        conv_sums(np.ones((1, 3, 3, 2)), np.ones((4, 3, 3, 2)))   # -> 18 everywhere
    """
    x = np.asarray(x)
    o, kh, kw, cin = weights.shape
    if x.shape[-1] != cin:
        raise ConversionError(f"conv expects {cin} input channels, got {x.shape[-1]}")
    sh, sw = strides
    if padding == "same":
        (t, b), (l, r) = same_padding(x.shape[1], kh, sh), same_padding(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=pad_value)
    n, h, w, _ = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    xf = x.astype(np.float64)
    wf = weights.astype(np.float64)
    acc = np.zeros((n, ho, wo, o))
    for i in range(kh):
        for j in range(kw):
            window = xf[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            acc += window @ wf[:, i, j, :].T
    return acc.astype(np.int64)


def threshold(scale: np.ndarray, offset: np.ndarray, bound: int):
    """Per channel ``(s, t)``: ``scale*S + offset >= 0  <=>  s*S >= t`` for integers
    ``|S| <= bound`` (``s = 0`` and ``t`` in {0, 1} where ``scale == 0``).

    Example::

        threshold(np.array([0.5, -2.0, 0.0]), np.array([-1.2, 3.0, -1.0]), 100)
        # -> (array([1, -1, 0]), array([3, -1, 1]))
    """
    scale = np.asarray(scale, np.float64)
    offset = np.asarray(offset, np.float64)
    s = np.sign(scale).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(s != 0, -offset / np.where(s != 0, np.abs(scale), 1.0), 0.0)
    t = np.ceil(np.clip(tau, -bound - 1, bound + 1)).astype(np.int64)
    t = np.where(s == 0, np.where(offset >= 0, 0, 1), t)
    return s, t


def _kernel_signs(layer) -> tuple[np.ndarray, np.ndarray]:
    """``(signs OHWI int8 in {-1,0,1}, per-channel magnitude)`` of the quantized kernel
    (for a masked layer of :mod:`bnnprune_tf.masks`, its effective kernel: pruned weights 0)."""
    kernel = layer_facts.quantized_kernel(layer).astype(np.float64)
    kernel = kernel.transpose(3, 0, 1, 2)          # HWIO -> OHWI
    flat = np.abs(kernel.reshape(len(kernel), -1))
    alpha = flat.max(axis=1)
    ok = np.all((flat == 0) | np.isclose(flat, alpha[:, None], rtol=1e-6, atol=0), axis=1)
    if not ok.all():
        raise ConversionError(
            f"layer {layer.name!r}: its quantized kernel is not binary or ternary (values other "
            f"than 0 and +-alpha per output channel in channels {np.flatnonzero(~ok)[:5].tolist()}):"
            " give it a sign kernel quantizer such as 'ste_sign'")
    return np.sign(kernel).astype(np.int8), alpha


def _conv_fields(layer, first: bool) -> dict:
    name = f"layer {layer.name!r}"
    if layer.data_format != "channels_last":
        raise ConversionError(f"{name}: data_format {layer.data_format!r}; only channels_last "
                              "(NHWC) models can be exported")
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        raise ConversionError(f"{name}: dilated or grouped convolutions cannot be exported; "
                              "use dilation_rate=1 and groups=1")
    if layer.activation is not None and layer.activation is not tf.keras.activations.linear:
        raise ConversionError(f"{name}: activation {layer.activation.__name__!r} inside the conv "
                              "cannot be exported; put BatchNormalization after a linear conv")
    if layer.input_quantizer is None and not first:
        raise ConversionError(f"{name}: a conv with a real-valued input is only supported as the "
                              "first layer; give it input_quantizer='ste_sign'")
    if layer.input_quantizer is not None and not layer_facts.is_binary_input(layer):
        raise ConversionError(f"{name}: input quantizer {layer.input_quantizer!r} is not a sign "
                              "(+-1, sign(0)=+1); only binary activations can be exported")
    if layer.padding not in ("valid", "same"):
        raise ConversionError(f"{name}: padding {layer.padding!r}; use 'valid' or 'same'")
    pad_values = float(getattr(layer, "pad_values", 0.0))
    if pad_values not in (0.0, 1.0):
        raise ConversionError(f"{name}: pad_values={pad_values}; only 0 and 1 can be exported")
    extra = {}
    if layer_facts.weight_domain(layer) is layer_facts.WeightDomain.AFFINE:   # SBNN
        signs, eta, xi = affine_fields(layer)
        alpha, extra["ratio"] = np.full(len(signs), eta), xi / eta
    else:
        signs, alpha = _kernel_signs(layer)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(len(signs))
    if masks.is_masked(layer):
        bias = bias * np.asarray(layer.channel_mask, np.float64)
    fields = dict(weights=signs, strides=tuple(int(s) for s in layer.strides),
                  padding=layer.padding, pad_value=int(pad_values), input_scale=1.0,
                  alpha=alpha, bias=bias, **extra)
    if layer.input_quantizer is None:
        if layer.padding == "same" and pad_values == 0.0:
            raise ConversionError(
                f"{name}: the first conv pads its real input with 0, which the int8 input codes "
                "(real = (v + 0.5) * 2/255) cannot express; use pad_values=1.0 or 'valid'")
        # x = INPUT_SCALE * (v + INPUT_OFFSET): the offset adds a constant per channel
        fields.update(input_scale=INPUT_SCALE, pad_value=int(round(1.0 / INPUT_SCALE - INPUT_OFFSET)),
                      bias=bias + alpha * INPUT_SCALE * INPUT_OFFSET
                      * signs.reshape(len(signs), -1).sum(axis=1))
    return fields


def _chain(model) -> list:
    """The model's layers in order; fails unless each consumes the previous one's output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError(f"model {model.name!r} has {len(model.inputs)} inputs and "
                              f"{len(model.outputs)} outputs; only single-input, single-output "
                              "chains can be exported")
    chain, previous = [], model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer.input, (list, tuple)) or layer.input is not previous:
            raise ConversionError(
                f"layer {layer.name!r} ({type(layer).__name__}) does not simply consume the "
                "previous layer's output (a branch, merge or residual connection): only chains "
                "of layers can be exported")
        chain.append(layer)
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ConversionError(f"model {model.name!r}: the last layer is not the model output")
    return chain


def _unsupported(layer) -> ConversionError:
    return ConversionError(
        f"layer {layer.name!r} ({type(layer).__name__}) cannot be exported: supported are "
        "QuantConv2D, BatchNormalization, MaxPool2D, Flatten, Reshape, Dropout and a final "
        "softmax. Replace it (e.g. a dense layer by a 1x1 QuantConv2D after "
        "Reshape((1, 1, -1)), as bnnprune_tf.models does)")


def fold(model: tf.keras.Model) -> Folded:
    """Fold a sequential Larq BNN into integer layers (see the module docstring).

    Raises:
        ConversionError: a layer that cannot be expressed (named in the message),
            a non-binary activation between convs, or a model that is not a chain.

    Example::

        folded = fold(models.build("binary_mlp", (28, 28, 1), width=0.25))
        print([type(l).__name__ for l in folded.layers])
        # ['Reshape', 'BinaryConv', 'BinaryConv', 'OutputConv']
    """
    chain = _chain(model)
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if len(input_shape) not in (1, 2, 3):
        raise ConversionError(f"input shape {input_shape}: expected an image HWC or a vector")
    result, dropped, pending, pending_index, seen_conv = [], [], None, None, False

    def close(pending, output):
        fields = pending["fields"]
        scale = pending["scale"] * fields.pop("alpha") * fields["input_scale"]
        offset = pending["scale"] * fields.pop("bias") + pending["offset"]
        if "ratio" in fields:             # SBNN weights {alpha, beta}: converters.sbnn

            if output:
                raise ConversionError(f"layer {pending['name']!r}: the last conv has SBNN "
                                      "weights; the exports need it binary (real logits)")
            return fold_affine(pending["name"], fields, scale, offset, fields.pop("ratio"))
        if output:
            return OutputConv(pending["name"], **fields, scale=scale, offset=offset)
        kmax = int(np.prod(fields["weights"].shape[1:])) * (128 if fields["input_scale"] != 1 else 1)
        s, t = threshold(scale, offset, kmax)
        fields["weights"] = (fields["weights"] * s[:, None, None, None]).astype(np.int8)
        return BinaryConv(pending["name"], **fields, thresholds=t.astype(np.int32))

    for i, layer in enumerate(chain):
        if i == 0 and isinstance(layer, BitSlice):
            result.append(BitSlices(layer.name, tuple(layer.slices)))
        elif isinstance(layer, lq.layers.QuantConv2D):
            sliced = bool(result) and isinstance(result[0], BitSlices)
            if not seen_conv and layer.input_quantizer is not None and not sliced:
                raise ConversionError(
                    f"layer {layer.name!r}: the first conv binarizes the model input; the exports "
                    "need the first conv to read the real input (input_quantizer=None)")
            if not seen_conv and sliced and layer.input_quantizer is None:
                raise ConversionError(
                    f"layer {layer.name!r} reads bit slices with a real-valued input; give it "
                    "input_quantizer='ste_sign' (bnnprune_tf.methods.cbnn.keep_slices(..., "
                    "first='binary')) so it runs as XNOR-popcount")
            fields = _conv_fields(layer, first=not seen_conv)
            if pending is not None:
                result[pending_index] = close(pending, output=False)
            seen_conv = True
            cout = fields["weights"].shape[0]
            pending = dict(name=layer.name, fields=fields, scale=np.ones(cout),
                           offset=np.zeros(cout), can_fold=True)
            pending_index = len(result)
            result.append(None)
        elif isinstance(layer, layers.BatchNormalization):
            if pending is None or not pending["can_fold"]:
                raise ConversionError(f"layer {layer.name!r}: BatchNormalization must directly "
                                      "follow a conv to be folded")
            scale, offset = batchnorm_affine(layer)
            pending["scale"], pending["offset"] = pending["scale"] * scale, pending["offset"] * scale + offset
        elif isinstance(layer, layers.MaxPool2D):
            if pending is None:
                raise ConversionError(f"layer {layer.name!r}: a max-pool before the first conv "
                                      "works on real values and cannot be exported")
            pending["can_fold"] = False
            result.append(MaxPool(layer.name, tuple(layer.pool_size), tuple(layer.strides),
                                  layer.padding))
        elif isinstance(layer, (layers.Flatten, layers.Reshape)):
            if pending is not None:
                pending["can_fold"] = False
            result.append(Reshape(layer.name, tuple(int(d) for d in layer.output_shape[1:])))
        elif isinstance(layer, layers.Dropout):
            dropped.append(layer.name)
        elif (isinstance(layer, layers.Activation) and i == len(chain) - 1
              and layer.activation is tf.keras.activations.softmax):
            dropped.append(layer.name)
        else:
            raise _unsupported(layer)
    if pending is None:
        raise ConversionError(f"model {model.name!r} has no QuantConv2D: nothing to export")
    tail = result[pending_index + 1:]
    if any(isinstance(l, MaxPool) for l in tail):
        raise ConversionError(f"layer {tail[0].name!r}: a max-pool after the last conv works on "
                              "real logits and cannot be exported; end the model in conv -> "
                              "BatchNormalization -> Flatten")
    # Flatten/Reshape after the last conv only change the logits' shape, which the
    # exports flatten to [N, classes] themselves.
    result = result[:pending_index] + [close(pending, output=True)]
    return Folded(model.name, input_shape, INPUT_SCALE, result, dropped)


# ---------------------------------------------------------------- SBNN {alpha, beta} convs
#: fixed-point shift of an SBNN decision (converters.sbnn explains the int64 comparison)
SHIFT = 32
_LIMIT = 2 ** 62


@dataclass(frozen=True)
class AffineConv(Conv):
    """A folded SBNN conv + BatchNorm + sign: ``weights`` are the connections ``B`` (int8
    OHWI in {0, 1}); output ``+1`` where ``signs * (S_B * 2**32 + ratio * S_1) >=
    thresholds`` (int64; see the module docstring), else ``-1``."""

    ratio: int = 0
    signs: np.ndarray = None
    thresholds: np.ndarray = None

    def window_sums(self, x: np.ndarray) -> np.ndarray:
        """``S_1``: the sum of each window (``conv(x, 1)``), int64 ``[N, H, W, 1]``."""
        ones = np.ones((1, *self.weights.shape[1:]), np.int8)
        return conv_sums(x, ones, self.strides, self.padding, self.pad_value)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """``signs * (S_B * 2**32 + ratio * S_1)`` as Python-exact int64."""
        u = (self.sums(x) << SHIFT) + np.int64(self.ratio) * self.window_sums(x)
        return u * self.signs.astype(np.int64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.where(self.decision(x) >= self.thresholds, 1, -1).astype(np.int8)


def affine_fields(layer) -> tuple[np.ndarray, float, float]:
    """``(B as OHWI int8, eta, xi)`` of an SBNN layer, with ``eta > 0`` (a negative
    ``tau`` swaps the roles of the two values: ``B -> 1 - B``)."""
    if not layer_facts.is_binary_input(layer):
        raise ConversionError(f"layer {layer.name!r}: an SBNN conv needs a sign input "
                              "quantizer ('ste_sign') to be exported")
    b = sbnn.connections(layer).transpose(3, 0, 1, 2)
    tau, phi = float(layer.tau), float(layer.phi)
    eta, xi = 2.0 * tau, phi - tau
    if eta == 0:
        raise ConversionError(f"layer {layer.name!r}: tau = 0, both weight values are equal "
                              "(phi): the layer does not depend on its weights")
    if eta < 0:
        b, eta, xi = 1 - b, -eta, xi + eta
    return b.astype(np.int8), eta, xi


def fold_affine(name: str, fields: dict, scale: np.ndarray, offset: np.ndarray,
                ratio: float) -> AffineConv:
    """The :class:`AffineConv` deciding ``scale * (S_B + ratio * S_1) + offset >= 0``
    (``scale``: ``eta`` times the affine map's scale after the conv, per channel;
    ``ratio = xi / eta``)."""
    if abs(ratio) >= 2 ** 20:
        raise ConversionError(f"layer {name!r}: |xi / eta| = {abs(ratio):.3g} (phi far from "
                              "tau): the C runtime's 64-bit comparison has no room for it")
    g = np.asarray(scale, np.float64)
    s = np.sign(g).astype(np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(s != 0, -np.asarray(offset, np.float64) * 2.0 ** SHIFT / np.abs(g), 0.0)
    t = np.ceil(np.clip(t, -_LIMIT, _LIMIT))
    t = np.where(s == 0, np.where(np.asarray(offset) >= 0, 0, 1), t).astype(np.int64)
    return AffineConv(name, weights=fields["weights"], strides=fields["strides"],
                      padding=fields["padding"], pad_value=fields["pad_value"],
                      input_scale=1.0, ratio=int(round(ratio * 2 ** SHIFT)), signs=s,
                      thresholds=t)
