"""Exact int8 TFLite flatbuffers of BNNs that stock TensorFlow Lite Micro runs.

TFLM has neither LCE's custom ops nor a SIGN kernel, and the stock post-training
quantizer is not exact for BNNs (``../shared/reference/firmware.md`` §8.3), so
:func:`to_tflm` writes the flatbuffer itself with the TFLite schema. Starting from
:func:`converters.fold.fold`, every binary conv + BatchNorm + sign becomes one
int8 ``CONV_2D`` with weights ``+-2`` (0 for pruned or dead weights), the odd
int32 bias ``1 - 2t``, scales 1.0, zero points 0 and a fused ``RELU_N1_TO_1``:
the accumulator ``2*S' + 1 - 2t`` is odd, so the output is exactly ``+-1``.

- same padding with ``pad_values=1`` is ``PADV2`` (constant +1) and a VALID conv;
  with ``pad_values=0`` it is the conv's own SAME padding (zero point 0 = zero);
- the input is int8 ``v = pixel - 128`` (real ``(v + 0.5) * 2/255``, see
  ``converters.fold.INPUT_SCALE``; the tensor declares scale 2/255 and zero point 0,
  the half step is folded into the first conv's bias), so pixel levels are exact;
- max-pool is ``MAX_POOL_2D`` on +-1, flatten/reshape is ``RESHAPE``;
- the last conv is an int8 ``CONV_2D`` with weights ``+-127``, per-channel scales and a
  requantized int8 output (logits; the softmax is dropped, it keeps the argmax),
  followed by ``RESHAPE`` to ``[1, classes]`` and, for ``output="float"``, ``DEQUANTIZE``.

:func:`reference` computes the same int8 graph in numpy (TFLite's fixed-point
requantization included), :func:`verify_tflm` runs the flatbuffer in the PyPI
``tflite-micro`` runtime and in ``tf.lite`` with the reference kernels and compares.

Example::

    import bnnprune_tf
    from bnnprune_tf import data, models
    from converters import tflm

    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    x, _ = data.load("mnist5k").arrays("test", limit=32)
    flatbuffer = tflm.to_tflm(model, output="float", calibration=x)
    report = tflm.verify_tflm(model, flatbuffer, x)
    print(report["bit_exact"], report["arena_bytes"])
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass

import flatbuffers
import numpy as np
from larq_compute_engine.mlir.python import tflite_schema as fb

from bnnprune_tf.errors import ConversionError
from converters import fold as fold_lib
from converters import sbnn

#: int8 magnitude of the last conv's weights: the bias is quantized in steps of
#: 1/127 of one weight, so the logits' offsets lose almost nothing.
OUTPUT_WEIGHT = 127

_VERSIONS = {"CONV_2D": 3, "MAX_POOL_2D": 2, "PADV2": 2, "RESHAPE": 1, "DEQUANTIZE": 2}


@dataclass(frozen=True)
class OutputQuantization:
    """int8 form of the last conv: ``logit_q = requantize(sum(weights*x) + bias)``."""

    weights: np.ndarray      # int8 OHWI
    bias: np.ndarray         # int32 [C]
    filter_scales: np.ndarray  # float32 [C]
    output_scale: np.float32


def output_quantization(folded: fold_lib.Folded, calibration=None) -> OutputQuantization:
    """Choose the int8 weights, bias and scales of the last conv.

    The output scale covers the largest logit of ``calibration`` (real inputs) if
    given, else the largest logit any input could produce (a loose bound that
    costs resolution).

    Example::

        q = output_quantization(fold_lib.fold(model), calibration=x_test[:100])
    """
    out = folded.output
    a, b = out.scale, out.offset
    if calibration is not None:
        largest = float(np.abs(folded.logits(folded.quantize_input(calibration))).max())
    else:
        bound = int(np.prod(out.weights.shape[1:])) * (128 if out.input_scale != 1 else 1)
        largest = float(np.max(np.abs(a) * bound + np.abs(b)))
    output_scale = np.float32(max(largest, 1e-6) / 127.0)
    magnitude = np.abs(a)
    live = magnitude > 0
    in_scale = np.float64(np.float32(out.input_scale))
    filter_scales = np.where(live, magnitude / (OUTPUT_WEIGHT * in_scale),
                             float(output_scale) / in_scale).astype(np.float32)
    weights = (out.weights * np.sign(a)[:, None, None, None] * OUTPUT_WEIGHT).astype(np.int8)
    bias_scale = in_scale * filter_scales.astype(np.float64)
    limit = 2**31 - 1 - OUTPUT_WEIGHT * 128 * int(np.prod(out.weights.shape[1:]))
    bias = np.clip(np.round(b / bias_scale), -limit, limit).astype(np.int32)
    return OutputQuantization(weights, bias, filter_scales, output_scale)


# ---------------------------------------------------------------- fixed point (TFLite)

def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``m = q * 2**(shift - 31)`` with a 31-bit ``q``."""
    if m == 0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(math.floor(abs(frac) * 2**31 + 0.5)) * (1 if frac > 0 else -1)
    if q == 2**31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def multiply_by_quantized_multiplier(x: np.ndarray, q: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier`` (double rounding), vectorized in int64."""
    x = np.asarray(x, np.int64)
    q = np.asarray(q, np.int64)
    shift = np.asarray(shift, np.int64)
    x = x * (np.int64(1) << np.maximum(shift, 0))
    ab = x * q
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.sign(total) * (np.abs(total) >> 31)          # C++ division truncates
    high = np.where((x == -2**31) & (q == -2**31), 2**31 - 1, high)
    exponent = np.maximum(-shift, 0)
    mask = (np.int64(1) << exponent) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> exponent) + (remainder > threshold)


def _requantize(acc, in_scale, filter_scales, out_scale, lo, hi):
    mults = [quantize_multiplier(float(np.float32(in_scale)) * float(f) / float(np.float32(out_scale)))
             for f in np.asarray(filter_scales, np.float32)]
    q = np.array([m[0] for m in mults], np.int64)
    shift = np.array([m[1] for m in mults], np.int64)
    return np.clip(multiply_by_quantized_multiplier(acc, q, shift), lo, hi).astype(np.int8)


def reference(folded: fold_lib.Folded, quant: OutputQuantization, x_int8: np.ndarray,
              output: str = "float") -> np.ndarray:
    """The exported int8 graph in numpy: int8 logits ``[N, classes]``, or for
    ``output="float"`` the dequantized float32 logits, bit for bit as TFLM computes them.

    Example::

        ref = reference(folded, output_quantization(folded), folded.quantize_input(x))
    """
    out = folded.output
    hidden = folded.hidden(x_int8)
    acc = fold_lib.conv_sums(hidden, quant.weights, out.strides, out.padding, out.pad_value)
    acc = acc + quant.bias
    logits = _requantize(acc, out.input_scale, quant.filter_scales, quant.output_scale,
                         -128, 127).reshape(len(hidden), -1)
    if output == "int8":
        return logits
    return (logits.astype(np.float32) * quant.output_scale).astype(np.float32)


# ---------------------------------------------------------------- flatbuffer writer

class _AlignedBuffer(fb.BufferT):
    """A buffer whose data start on a 16-byte boundary (int32 loads on Cortex-M)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector(len(payload))
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


class _Graph:
    def __init__(self):
        self.tensors, self.buffers, self.operators, self.codes = [], [_AlignedBuffer()], [], []

    def tensor(self, name, shape, dtype, data=None, scales=(1.0,), zero_points=(0,)):
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(int(d) for d in shape), dtype
        if dtype != fb.TensorType.FLOAT32:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [int(z) for z in zero_points]
            q.quantizedDimension = 0
            t.quantization = q
        if data is not None:
            buffer = _AlignedBuffer()
            buffer.data = np.ascontiguousarray(data).tobytes()
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name, inputs, outputs, options_type=0, options=None):
        if name not in self.codes:
            self.codes.append(name)
        o = fb.OperatorT()
        o.opcodeIndex = self.codes.index(name)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def finish(self, inputs, outputs, description) -> bytes:
        model = fb.ModelT()
        model.version = 3
        model.description = description
        model.operatorCodes = []
        for name in self.codes:
            c = fb.OperatorCodeT()
            c.builtinCode = getattr(fb.BuiltinOperator, name)
            c.deprecatedBuiltinCode = min(c.builtinCode, 127)
            c.version = _VERSIONS[name]
            model.operatorCodes.append(c)
        sub = fb.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.operators, "main"
        sub.inputs, sub.outputs = list(inputs), list(outputs)
        model.subgraphs = [sub]
        model.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _int8_shape(shape):
    return (1, *shape) if len(shape) == 3 else (1, 1, 1, int(np.prod(shape)))


def _pad(g, x, shape, layer, name):
    (t, b) = fold_lib.same_padding(shape[0], layer.kernel_size[0], layer.strides[0])
    (l, r) = fold_lib.same_padding(shape[1], layer.kernel_size[1], layer.strides[1])
    paddings = g.tensor(f"{name}/paddings", (4, 2), fb.TensorType.INT32,
                        np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32))
    value = g.tensor(f"{name}/pad_value", (), fb.TensorType.INT8,
                     np.array([layer.pad_value], np.int8), [layer.input_scale])
    padded_shape = (shape[0] + t + b, shape[1] + l + r, shape[2])
    y = g.tensor(f"{name}/padded", (1, *padded_shape), fb.TensorType.INT8,
                 scales=[layer.input_scale])
    g.op("PADV2", [x, paddings, value], [y], fb.BuiltinOptions.PadV2Options, fb.PadV2OptionsT())
    return y, padded_shape


def _conv(g, x, shape, layer, weights, bias, filter_scales, out_scale, activation, name):
    """CONV_2D (after a PADV2 when padding with a nonzero value)."""
    padding = fb.Padding.VALID
    if layer.padding == "same":
        if layer.pad_value != 0:
            x, shape = _pad(g, x, shape, layer, name)
        else:
            padding = fb.Padding.SAME
    cout = weights.shape[0]
    in_scale = np.float32(layer.input_scale)
    w = g.tensor(f"{name}/weights", weights.shape, fb.TensorType.INT8, weights.astype(np.int8),
                 filter_scales, [0] * cout)
    bias_scales = (np.float64(in_scale) * np.asarray(filter_scales, np.float64)).astype(np.float32)
    b = g.tensor(f"{name}/bias", (cout,), fb.TensorType.INT32, bias.astype(np.int32),
                 bias_scales, [0] * cout)
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if padding == fb.Padding.SAME:
        ho, wo = -(-shape[0] // sh), -(-shape[1] // sw)
    else:
        ho, wo = (shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1
    y = g.tensor(name, (1, ho, wo, cout), fb.TensorType.INT8, scales=[out_scale])
    options = fb.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = padding, sh, sw
    options.fusedActivationFunction = activation
    g.op("CONV_2D", [x, w, b], [y], fb.BuiltinOptions.Conv2DOptions, options)
    return y, (ho, wo, cout)


def to_tflm(model, output: str = "float", calibration=None) -> bytes:
    """Write ``model`` (a sequential Larq BNN) as an exact int8 TFLite flatbuffer.

    Args:
        model: a Keras model that :func:`converters.fold.fold` accepts.
        output: ``"float"`` (int8 logits, then ``DEQUANTIZE``) or ``"int8"`` (the
            int8 logits themselves; real value = scale * q).
        calibration: optional real inputs ``[N, *input_shape]`` whose logits set the
            output scale; without them the scale covers every possible logit.

    Returns:
        The flatbuffer bytes (``.tflite``), input int8 ``[1, *input_shape]``.

    Raises:
        ConversionError: a layer the export cannot express (named), or a bad argument.

    Example::

        flatbuffer = to_tflm(model, output="int8")
        open("model.tflite", "wb").write(flatbuffer)
    """
    if output not in ("float", "int8"):
        raise ConversionError(f"output={output!r}: use 'float' (dequantized logits) or 'int8'")
    sbnn.check_tflm(model)
    folded = fold_lib.fold(model)
    if isinstance(folded.layers[0], fold_lib.BitSlices):
        raise ConversionError(
            f"model {model.name!r} reads bit slices of raw pixels (a BitSlice input): stock "
            "TFLite Micro has no exact int8 op that extracts bits, so the int8 export refuses "
            "it. Deploy it with LCE (converters.lce, first layer LceBconv2d) or the bnnprune C "
            "runtime (converters.c_export: the packed input is the pixel bytes)")
    return _write(folded, output_quantization(folded, calibration), output)


def _write(folded, quant, output):
    g = _Graph()
    shape = tuple(folded.input_shape)
    x = g.tensor("input", (1, *shape), fb.TensorType.INT8, scales=[folded.input_scale])
    model_input = x
    scale = folded.input_scale
    relu1 = fb.ActivationFunctionType.RELU_N1_TO_1
    for i, layer in enumerate(folded.layers):
        name = f"{i:02d}_{layer.name}"
        if isinstance(layer, fold_lib.Reshape):
            target = _int8_shape(layer.shape)
            new_shape = g.tensor(f"{name}/shape", (len(target),), fb.TensorType.INT32,
                                 np.array(target, np.int32))
            y = g.tensor(name, target, fb.TensorType.INT8, scales=[scale])
            options = fb.ReshapeOptionsT()
            options.newShape = list(target)
            g.op("RESHAPE", [x, new_shape], [y], fb.BuiltinOptions.ReshapeOptions, options)
            x, shape = y, target[1:]
        elif isinstance(layer, fold_lib.MaxPool):
            (ph, pw), (sh, sw) = layer.pool_size, layer.strides
            if layer.padding == "same":
                ho, wo = -(-shape[0] // sh), -(-shape[1] // sw)
            else:
                ho, wo = (shape[0] - ph) // sh + 1, (shape[1] - pw) // sw + 1
            y = g.tensor(name, (1, ho, wo, shape[2]), fb.TensorType.INT8, scales=[scale])
            options = fb.Pool2DOptionsT()
            options.padding = fb.Padding.SAME if layer.padding == "same" else fb.Padding.VALID
            options.strideH, options.strideW = sh, sw
            options.filterHeight, options.filterWidth = ph, pw
            g.op("MAX_POOL_2D", [x], [y], fb.BuiltinOptions.Pool2DOptions, options)
            x, shape = y, (ho, wo, shape[2])
        elif isinstance(layer, fold_lib.BinaryConv):
            if len(shape) != 3:
                raise ConversionError(f"layer {layer.name!r}: conv input of shape {shape}")
            cout = layer.weights.shape[0]
            # int8 real value of a weight step: 1/input_scale, so input*filter scale = 1
            filter_scales = np.full(cout, 1.0 / np.float32(layer.input_scale), np.float32)
            x, shape = _conv(g, x, shape, layer, 2 * layer.weights, 1 - 2 * layer.thresholds.astype(np.int64),
                             filter_scales, 1.0, relu1, name)
            scale = 1.0
        else:  # the OutputConv, always last
            x, shape = _conv(g, x, shape, layer, quant.weights, quant.bias, quant.filter_scales,
                             quant.output_scale, fb.ActivationFunctionType.NONE, name)
    classes = int(np.prod(shape))
    target = (1, classes)
    new_shape = g.tensor("logits/shape", (2,), fb.TensorType.INT32, np.array(target, np.int32))
    y = g.tensor("logits_int8", target, fb.TensorType.INT8, scales=[quant.output_scale])
    options = fb.ReshapeOptionsT()
    options.newShape = list(target)
    g.op("RESHAPE", [x, new_shape], [y], fb.BuiltinOptions.ReshapeOptions, options)
    if output == "float":
        z = g.tensor("logits", target, fb.TensorType.FLOAT32)
        g.op("DEQUANTIZE", [y], [z], fb.BuiltinOptions.DequantizeOptions, fb.DequantizeOptionsT())
        y = z
    return g.finish([model_input], [y], f"bnnprune_tf exact int8 BNN: {folded.name}")


# ---------------------------------------------------------------- running and checking

def ops(flatbuffer: bytes) -> list[str]:
    """Builtin operator names the flatbuffer uses, in first-use order.

    Example::

        ops(to_tflm(model))   # ['PADV2', 'CONV_2D', 'MAX_POOL_2D', 'RESHAPE', 'DEQUANTIZE']
    """
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    m = fb.Model.GetRootAs(flatbuffer, 0)
    codes = [m.OperatorCodes(i) for i in range(m.OperatorCodesLength())]
    return [names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())] for c in codes]


def _output_quantization_of(flatbuffer: bytes, folded) -> OutputQuantization:
    """The last conv's int8 parameters as stored in ``flatbuffer``."""
    m = fb.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    sub = m.subgraphs[0]
    code_names = ops(flatbuffer)
    convs = [op for op in sub.operators if code_names[op.opcodeIndex] == "CONV_2D"]
    if not convs:
        raise ConversionError("the flatbuffer has no CONV_2D: pass the output of to_tflm")
    last = convs[-1]
    w_t, b_t, y_t = (sub.tensors[last.inputs[1]], sub.tensors[last.inputs[2]],
                     sub.tensors[last.outputs[0]])
    weights = np.frombuffer(bytes(m.buffers[w_t.buffer].data), np.int8).reshape(w_t.shape)
    bias = np.frombuffer(bytes(m.buffers[b_t.buffer].data), np.int32)
    if weights.shape != folded.output.weights.shape:
        raise ConversionError(f"the flatbuffer's last conv has weights {weights.shape}, the "
                              f"model's {folded.output.weights.shape}: it was made from another model")
    return OutputQuantization(weights.copy(), bias.copy(),
                              np.asarray(w_t.quantization.scale, np.float32),
                              np.float32(y_t.quantization.scale[0]))


def run_tflm(flatbuffer: bytes, x_int8: np.ndarray, arena_size: int | None = None):
    """Run ``flatbuffer`` sample by sample in the PyPI ``tflite-micro`` runtime.

    Returns ``(outputs [N, ...], arena bytes used)``.

    Example::

        y, arena = run_tflm(flatbuffer, folded.quantize_input(x))
    """
    try:
        from tflite_micro import runtime
    except ImportError as e:
        raise ConversionError("the tflite-micro runtime is missing: pip install --pre "
                              "tflite-micro (it has only pre-release versions)") from e
    interpreter = runtime.Interpreter.from_bytes(
        bytes(flatbuffer), arena_size=arena_size or max(64 * 1024, 10 * len(flatbuffer)))
    outputs = []
    for sample in np.asarray(x_int8, np.int8):
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0))[0])
    return np.stack(outputs), _arena_bytes(interpreter)


def _arena_bytes(interpreter) -> int:
    """Parse ``Arena allocation total N bytes`` that TFLM prints to the C stderr."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = re.search(r"Arena allocation total (\d+) bytes", text)
    if not found:
        raise ConversionError(f"tflite-micro printed no arena total: {text[:300]!r}")
    return int(found.group(1))


def run_tflite(flatbuffer: bytes, x_int8: np.ndarray) -> np.ndarray:
    """Run ``flatbuffer`` in ``tf.lite.Interpreter`` with the reference kernels (BUILTIN_REF).

    Example::

        y = run_tflite(flatbuffer, folded.quantize_input(x))
    """
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_content=bytes(flatbuffer),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in np.asarray(x_int8, np.int8):
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def verify_tflm(model, flatbuffer: bytes, samples: np.ndarray, tflite: bool = True) -> dict:
    """Run ``flatbuffer`` (from :func:`to_tflm`) in TFLM and compare.

    Checks the TFLM outputs bit for bit against :func:`reference` (the numpy
    integer model), optionally the same against ``tf.lite`` with reference kernels,
    and the argmax against Keras on the real ``samples``. Raises if the integer
    results differ; the Keras agreement is reported: the integer model's logits
    equal Keras' up to float rounding (``integer_logit_max_error``), but the int8
    output quantizes them, so near ties can flip (``argmax_agreement``).

    Returns:
        ``{"samples", "bit_exact", "tflite_bit_exact", "argmax_agreement",
        "integer_argmax_agreement", "integer_logit_max_error", "arena_bytes",
        "model_bytes", "ops"}``

    Raises:
        ConversionError: TFLM (or tf.lite) and the numpy reference disagree.

    Example::

        report = verify_tflm(model, to_tflm(model), x_test[:100])
    """
    samples = np.asarray(samples, np.float32)
    folded = fold_lib.fold(model)
    output = "float" if ops(flatbuffer)[-1] == "DEQUANTIZE" else "int8"
    quant = _output_quantization_of(flatbuffer, folded)
    x_int8 = folded.quantize_input(samples)
    expected = reference(folded, quant, x_int8, output)
    got, arena = run_tflm(flatbuffer, x_int8)
    got = got.reshape(expected.shape)
    mismatches = int(np.sum(got != expected))
    if mismatches:
        raise ConversionError(
            f"TFLM and the numpy integer reference differ in {mismatches} of {expected.size} "
            "outputs: the flatbuffer does not match this model (re-export it with to_tflm)")
    report = {"samples": len(samples), "bit_exact": True, "arena_bytes": arena,
              "model_bytes": len(flatbuffer), "ops": ops(flatbuffer)}
    if tflite:
        lite = run_tflite(flatbuffer, x_int8).reshape(expected.shape)
        if not np.array_equal(lite, expected):
            raise ConversionError(
                f"tf.lite (reference kernels) and the numpy reference differ in "
                f"{int(np.sum(lite != expected))} outputs")
        report["tflite_bit_exact"] = True
    keras = fold_lib.keras_logits(model, samples)
    integer = folded.logits(x_int8)
    report["argmax_agreement"] = float(np.mean(keras.argmax(1) == expected.argmax(1)))
    report["integer_argmax_agreement"] = float(np.mean(keras.argmax(1) == integer.argmax(1)))
    report["integer_logit_max_error"] = float(np.abs(keras - integer).max())
    return report


def to_c_source(flatbuffer: bytes, arena_bytes: int, folded: fold_lib.Folded,
                test_inputs: np.ndarray | None = None, name: str = "g_model") -> tuple[str, str]:
    """``(model_data.h, model_data.cc)`` for ``firmware/tflm``: the flatbuffer as a
    16-byte aligned C array, the arena size (measured + 25 %, whole KiB), which ops
    to register, and optional int8 test inputs with their expected int8 logits
    (from :func:`reference`).

    Example::

        header, source = to_c_source(flatbuffer, report["arena_bytes"], folded, codes[:10])
    """
    used = ops(flatbuffer)
    quant = _output_quantization_of(flatbuffer, folded)
    tests = np.zeros((0, *folded.input_shape), np.int8) if test_inputs is None else test_inputs
    expected = reference(folded, quant, tests, "int8") if len(tests) else np.zeros((0, 1))
    arena = (int(arena_bytes) * 5 // 4 + 1023) // 1024 * 1024
    classes, size = folded.num_classes, int(np.prod(folded.input_shape))
    lines = [
        "// Generated by bnnprune convert --to tflm-c; do not edit.",
        "#ifndef BNNPRUNE_TFLM_MODEL_DATA_H_",
        "#define BNNPRUNE_TFLM_MODEL_DATA_H_",
        "#include <stdint.h>",
        "",
        f"// model {folded.name}: int8 input {list(folded.input_shape)} = pixel - 128 "
        f"(real value (q + 0.5) * 2/255), {classes} logits",
        f"#define BNNPRUNE_MODEL_OUTPUT_FLOAT {int(used[-1] == 'DEQUANTIZE')}",
        f"#define BNNPRUNE_NUM_OPS {len(used)}",
        *[f"#define BNNPRUNE_USES_{op} 1" for op in used],
        f"// arena measured by tflite-micro: {arena_bytes} bytes (+25 %, whole KiB)",
        f"constexpr int kTensorArenaSize = {arena};",
        f"constexpr int kInputSize = {size};",
        f"constexpr int kNumClasses = {classes};",
        f"constexpr float kOutputScale = {float(quant.output_scale)!r}f;  // logit = scale * q",
        f"constexpr int kNumTests = {len(tests)};",
        f"extern const unsigned char {name}[];",
        f"extern const unsigned int {name}_len;",
        "extern const int8_t g_test_inputs[][kInputSize];",
        "extern const int8_t g_test_logits[][kNumClasses];",
        "#endif",
    ]
    body = ["// Generated by bnnprune convert --to tflm-c; do not edit.",
            '#include "model_data.h"', "",
            f"alignas(16) const unsigned char {name}[] = {{"]
    data = np.frombuffer(flatbuffer, np.uint8)
    body += ["  " + ", ".join(f"0x{v:02x}" for v in data[i:i + 16]) + ","
             for i in range(0, len(data), 16)]
    body += ["};", f"const unsigned int {name}_len = {len(data)};", ""]
    for decl, rows, width in (("const int8_t g_test_inputs[][kInputSize]", tests, size),
                              ("const int8_t g_test_logits[][kNumClasses]", expected, classes)):
        rows = [np.asarray(r).reshape(-1) for r in rows] or [np.zeros(width, int)]  # no empty arrays in C++
        body += [f"{decl} = {{", *["  {" + ", ".join(str(int(v)) for v in r) + "}," for r in rows],
                 "};"]
    return "\n".join(lines) + "\n", "\n".join(body) + "\n"


def write_c_source(model, samples: np.ndarray, out_dir, output: str = "float",
                   tests: int = 10, tflite_name: str = "model.tflite") -> dict:
    """Export ``model`` for ``firmware/tflm``: :func:`to_tflm` calibrated on ``samples``,
    :func:`verify_tflm` on them (which measures the arena), then ``model_data.h``,
    ``model_data.cc`` (with the first ``tests`` samples as test vectors) and the
    ``.tflite`` file itself in ``out_dir``.

    Returns the verification report plus ``files``.

    Example::

        x, _ = data.load("mnist5k").arrays("test", limit=200)
        write_c_source(model, x, "firmware/tflm/build")
    """
    from pathlib import Path

    from bnnprune_tf import files

    samples = np.asarray(samples, np.float32)
    if len(samples) < 1:
        raise ConversionError("no samples: pass real inputs for calibration and test vectors")
    flatbuffer = to_tflm(model, output=output, calibration=samples)
    report = verify_tflm(model, flatbuffer, samples)
    folded = fold_lib.fold(model)
    header, source = to_c_source(flatbuffer, report["arena_bytes"], folded,
                                 folded.quantize_input(samples[:tests]))
    out = Path(out_dir)
    paths = [files.write_text(out / "model_data.h", header),
             files.write_text(out / "model_data.cc", source),
             files.write_bytes(out / tflite_name, flatbuffer)]
    return {**report, "files": [str(p) for p in paths]}
