"""Convert a Larq model with Larq Compute Engine, check it against Keras, look inside.

- :func:`convert` runs LCE's converter on a lean SavedModel of the model (the
  serving function and its variables: what ``larq_compute_engine.convert_keras_model``
  converts, without Keras' per-layer serialization, which the converter never reads), after
  stripping pruning state (tfmot wrappers, which the converter cannot handle,
  and bnnprune masks, whose pruned channels it removes);
- :func:`verify` runs the LCE interpreter and Keras on the same samples and
  raises when they disagree; :func:`divergence` finds the first binary conv whose
  input signs differ;
- :func:`inspect` reads the flatbuffer with the TFLite schema (see
  :mod:`converters.flatbuffer`): op histogram, tensor sizes, float vs
  bit-packed weight bytes.

Lint findings (layers LCE will not make binary) live in :mod:`converters.lint`.

Example::

    from converters import lce
    flatbuffer = lce.convert(model)
    print(lce.verify(model, flatbuffer, x_test, y_test))
    print(lce.inspect(flatbuffer).to_markdown())
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, prune, thresholds
from bnnprune_tf.errors import ConversionError
from bnnprune_tf.reporting import markdown_table
from converters import flatbuffer as fb_lib
from converters import sbnn

TARGETS = ("arm", "xcore")
KERNELS = ("default", "indirect_bgemm")
FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64"}
BINARY_CONV = "LceBconv2d"


def convert(model: tf.keras.Model, target: str = "arm") -> bytes:
    """Convert ``model`` to an LCE flatbuffer (the bytes of a ``.tflite`` file).

    Pruning state is stripped first (:func:`bnnprune_tf.prune.strip_pruning`), and the
    BatchNorm thresholds on integer sums are moved half-way between two integers
    (:func:`bnnprune_tf.thresholds.centered`: every sign in float64 kept). LCE folds
    BatchNorm into a threshold of its own in float32: one that lay on an integer within
    float32 rounding made it disagree with Keras on 5 % of the images of an ETB model.
    Input and output stay float32; the batch size becomes 1. The flatbuffer is the one
    ``larq_compute_engine.convert_keras_model`` makes, byte for byte (tested).

    Raises:
        ConversionError: not a Keras model, unknown target, a non-batch ``None``
            dimension, or the converter failed (its message is included).

    Example::

        flatbuffer = convert(models.build("mnist_bnn", (28, 28, 1)))
        files.write_bytes("model.tflite", flatbuffer)
    """
    from larq_compute_engine import convert_saved_model

    if not isinstance(model, tf.keras.Model):
        raise ConversionError(f"convert expects a tf.keras.Model, got {type(model).__name__}: "
                              "load it with tf.keras.models.load_model first")
    if target not in TARGETS:
        raise ConversionError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    for tensor in model.inputs:
        if None in tuple(tensor.shape)[1:]:
            raise ConversionError(
                f"input {tensor.name} has shape {tuple(tensor.shape)}: LCE needs every dimension "
                "but the batch fixed; rebuild the model with a full input_shape")
    model = _deployable(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tempfile.TemporaryDirectory() as saved_model:
                _save_serving(model, saved_model)
                return convert_saved_model(saved_model, target=target)
    except Exception as e:  # the converter raises plain Exception subclasses of many kinds
        raise ConversionError(
            f"LCE could not convert model {model.name!r}: {type(e).__name__}: {e}. "
            "Run converters.lint.lint(model) to find layers LCE does not support") from e


def _deployable(model: tf.keras.Model) -> tf.keras.Model:
    """What :func:`convert` hands to LCE: pruning state stripped, thresholds on integer
    sums centered, SBNN kernels in LCE's form (each computes what ``model`` computes)."""
    model = thresholds.centered(prune.strip_pruning(model))   # no threshold on an integer sum
    return sbnn.lce_form(model)           # SBNN {alpha, beta}: binary + shared term


def _save_serving(model: tf.keras.Model, path: str) -> None:
    """Save ``model``'s inference call (batch 1) and its variables as a SavedModel with
    the signature Keras gives it (inputs by input name, outputs by output layer name),
    without the Keras layers' own serialization (most of the time of
    ``model.save(path, save_format="tf")`` on a deep model, and nothing the converter
    reads)."""
    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype, name=t.name.split(":")[0])
             for t in model.inputs]

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        names = model.output_names or [f"output_{i}" for i in range(len(outputs))]
        return dict(zip(names, outputs))

    module = tf.Module()
    module.variables_ = list(model.variables)    # tracked, so the SavedModel holds them
    module.serve = tf.function(serve, input_signature=specs)
    tf.saved_model.save(module, path, signatures=module.serve.get_concrete_function())


@dataclass(frozen=True)
class Verification:
    """Keras vs LCE on the same samples."""

    samples: int
    argmax_agreement: float     # fraction of samples with the same argmax
    argmax_ties: int            # samples whose argmax differs only between tied outputs
    max_abs_diff: float
    keras_accuracy: float | None
    lce_accuracy: float | None
    kernel: str

    def to_dict(self) -> dict:
        return asdict(self)


def interpreter(flatbuffer: bytes, kernel: str = "default", num_threads: int = 1):
    """An LCE interpreter; ``kernel`` is ``"default"`` or ``"indirect_bgemm"``.

    Example::

        interp = interpreter(flatbuffer, "indirect_bgemm")
        probabilities = interp.predict(x_test[:10])
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    if kernel not in KERNELS:
        raise ConversionError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    fb_lib.read(flatbuffer)  # a clear error for bytes that are not a flatbuffer
    try:
        return Interpreter(flatbuffer, num_threads=num_threads,
                           use_indirect_bgemm=kernel == "indirect_bgemm")
    except RuntimeError as e:
        raise ConversionError(
            f"the LCE interpreter rejected the model with the {kernel} kernel: {e}. "
            "Grouped binary convolutions need kernel='indirect_bgemm'") from e



def check_finite(x: np.ndarray, what: str) -> None:
    """A clear error for NaN or infinite inputs (the data is at fault, not the converter)."""
    bad = ~np.isfinite(np.asarray(x, dtype=np.float32))
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
        raise ConversionError(f"{what} contain {int(bad.sum())} NaN or infinite values (first "
                              f"in sample {first}): clean the input data")


def _check_samples(model, samples, labels):
    samples = np.asarray(samples, dtype=np.float32)
    expected = tuple(model.inputs[0].shape)[1:]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError("verify and divergence support models with one input and one output; "
                              f"{model.name!r} has {len(model.inputs)} and {len(model.outputs)}")
    if samples.ndim != len(expected) + 1 or tuple(samples.shape[1:]) != expected:
        raise ConversionError(f"samples have shape {samples.shape}, the model expects "
                              f"(N, {', '.join(map(str, expected))}): pass a batch of inputs")
    if len(samples) == 0:
        raise ConversionError("no samples to verify with: pass at least one input")
    check_finite(samples, "samples")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(samples):
            raise ConversionError(f"{len(labels)} labels for {len(samples)} samples: "
                                  "pass one label per sample")
    return samples, labels


def verify(model: tf.keras.Model, flatbuffer: bytes, samples, labels=None, *,
           atol: float = 1e-3, min_agreement: float = 1.0,
           kernel: str = "default", check: bool = True) -> Verification:
    """Run Keras and the LCE interpreter on ``samples`` and compare their outputs.

    ``model`` is run as given (a masked model too), so the check also covers
    the pruning state that :func:`convert` strips.

    Args:
        samples: a batch of model inputs (float32, shape ``(N, *input_shape)``).
        labels: optional integer labels; adds both accuracies.
        atol: largest allowed absolute difference of any output value. Also the
            tie tolerance: when Keras' outputs for its top class and LCE's top class
            are within ``atol``, the sample counts as a tie, not a disagreement
            (integer-valued binary sums tie exactly, and rounding then picks either).
        min_agreement: smallest allowed fraction of samples with equal argmax,
            ties counted as equal.
        kernel: the LCE bconv kernel to run, ``"default"`` or ``"indirect_bgemm"``.
        check: raise on a disagreement (default); False only measures.

    Raises:
        ConversionError: the outputs differ beyond ``atol`` or ``min_agreement``;
            the message names the first differing sample.

    Example::

        result = verify(model, convert(model), x_test, y_test)
        assert result.argmax_agreement == 1.0
    """
    samples, labels = _check_samples(model, samples, labels)
    keras_out = np.asarray(model.predict(samples, batch_size=256, verbose=0), dtype=np.float32)
    interp = interpreter(flatbuffer, kernel)
    if interp.input_types[0] != np.float32:
        raise ConversionError(f"verify needs a float32 model input, the flatbuffer has "
                              f"{interp.input_types[0]}: convert with the default input type")
    lce_out = np.asarray(interp.predict(samples), dtype=np.float32).reshape(keras_out.shape)
    keras_top = keras_out.reshape(len(samples), -1).argmax(axis=1)
    lce_top = lce_out.reshape(len(samples), -1).argmax(axis=1)
    diff = np.abs(keras_out - lce_out).reshape(len(samples), -1).max(axis=1)
    same = keras_top == lce_top
    flat = keras_out.reshape(len(samples), -1)
    rows = np.arange(len(samples))
    tie = ~same & (flat[rows, lce_top] >= flat[rows, keras_top] - atol)
    result = Verification(
        samples=len(samples), argmax_agreement=float(same.mean()), argmax_ties=int(tie.sum()),
        max_abs_diff=float(diff.max()),
        keras_accuracy=None if labels is None else float((keras_top == labels).mean()),
        lce_accuracy=None if labels is None else float((lce_top == labels).mean()),
        kernel=kernel)
    bad = np.flatnonzero(~(same | tie) | (diff > atol))
    if check and (float((same | tie).mean()) < min_agreement or result.max_abs_diff > atol):
        i = int(bad[0])
        raise ConversionError(
            f"LCE and Keras disagree: argmax agreement {result.argmax_agreement:.4f} with "
            f"{result.argmax_ties} ties (need >= {min_agreement}), max |diff| "
            f"{result.max_abs_diff:.3g} (need <= {atol}). First differing sample: {i} (Keras "
            f"argmax {keras_top[i]}, LCE argmax {lce_top[i]}, |diff| {diff[i]:.3g}). Check "
            "converters.lint.lint(model) for layers LCE treats differently, "
            "converters.lce.divergence(model, samples) for the first binary conv whose "
            "input signs differ, or relax atol/min_agreement if the gap is float rounding")
    return result


def divergence(model: tf.keras.Model, samples, kernel: str = "default",
               stop_at_first_flip: bool = True) -> list[dict]:
    """Where LCE first departs from Keras: the float input of every binary conv (the
    tensor its sign reads), in layer order, computed by Keras and by LCE (the model cut
    there, converted as :func:`convert` converts it) on ``samples``.

    A row per binary conv: ``layer``, ``max_abs_diff``, ``scale`` (Keras' largest
    ``|value|``), ``sign_flips`` (values whose sign differs, so the conv's binary input
    does) and ``largest_flipped`` (Keras' largest ``|value|`` among them). Rounding
    differences that flip no sign are harmless. The first row with flips names where the
    outputs can part: flips of values far from 0 are a real difference (a layer LCE
    computes otherwise); flips of values within rounding of 0 (``largest_flipped`` near
    float32 epsilon x ``scale``: a float residual sum) are rounding, and as each cut is
    converted on its own, LCE may round its last ops otherwise than in the whole model.
    Stops after that row unless ``stop_at_first_flip`` is False. One conversion per row:
    a debugging tool, for when :func:`verify` disagrees.

    Example::

        for row in divergence(model, x_test[:200]):
            print(row)      # {'layer': 's3b2_conv', 'max_abs_diff': 0.0001, ...}
    """
    samples, _ = _check_samples(model, samples, None)
    ready = _deployable(model)
    rows = []
    for layer in ready.layers:
        if not layer_facts.is_binary_conv(layer) or any(
                layer.input is t for t in ready.inputs):
            continue
        cut = tf.keras.Model(ready.inputs, layer.input)
        keras_out = np.asarray(cut.predict(samples, batch_size=256, verbose=0), np.float32)
        lce_out = np.asarray(interpreter(convert(cut), kernel).predict(samples),
                             np.float32).reshape(keras_out.shape)
        flipped = (keras_out >= 0) != (lce_out >= 0)
        flips = int(flipped.sum())
        rows.append({"layer": layer.name,
                     "max_abs_diff": float(np.abs(keras_out - lce_out).max()),
                     "scale": float(np.abs(keras_out).max()), "sign_flips": flips,
                     "largest_flipped": float(np.abs(keras_out[flipped]).max()) if flips
                     else None})
        if flips and stop_at_first_flip:
            break
    return rows


@dataclass
class Inspection:
    """What a flatbuffer holds: ops, tensors and where the bytes go."""

    ops: dict[str, int]
    total_bytes: int
    float_weight_bytes: int
    bitpacked_weight_bytes: int
    other_constant_bytes: int
    largest_activation_bytes: int
    binary_convs: list[dict] = field(default_factory=list)
    tensors: list[dict] = field(default_factory=list)

    def to_dict(self, with_tensors: bool = False) -> dict:
        out = asdict(self)
        if not with_tensors:
            out.pop("tensors")
        return out

    @property
    def constant_bytes(self) -> int:
        """Every constant's bytes: bit-packed filters, float weights and the rest."""
        return self.bitpacked_weight_bytes + self.float_weight_bytes + self.other_constant_bytes

    def op_rows(self) -> dict[str, dict]:
        """Op histogram as table rows."""
        return {op: {"count": n} for op, n in self.ops.items()}

    def byte_rows(self) -> dict[str, dict]:
        """Where the flatbuffer's bytes go, as table rows."""
        return {"flatbuffer": {"bytes": self.total_bytes},
                "bit-packed weights (LceBconv2d filters)": {"bytes": self.bitpacked_weight_bytes},
                "float weights": {"bytes": self.float_weight_bytes},
                "other constants (thresholds, shapes)": {"bytes": self.other_constant_bytes},
                "largest activation tensor": {"bytes": self.largest_activation_bytes}}

    def summary(self) -> str:
        packed = sum(1 for c in self.binary_convs if c["output"] == "bitpacked")
        return f"{len(self.binary_convs)} LceBconv2d, {packed} of them write bit-packed output."

    def to_markdown(self) -> str:
        """Op histogram and byte split as two markdown tables."""
        return "\n\n".join([markdown_table(self.op_rows(), "op"),
                             markdown_table(self.byte_rows()), self.summary()])


def inspect(flatbuffer: bytes) -> Inspection:
    """Op histogram, tensor sizes and the float vs bit-packed weight split of ``flatbuffer``.

    Bit-packed weights are the filters of ``LceBconv2d``; float weights are all
    float constants (float convs, fully connected layers, BatchNorm not folded).

    Example::

        info = inspect(convert(model))
        print(info.ops.get("LceBconv2d", 0), info.float_weight_bytes)
    """
    graph = fb_lib.read(flatbuffer)
    ops = dict(Counter(op.type for op in graph.operators))
    packed_filters = {op.inputs[1] for op in graph.operators
                      if op.type == BINARY_CONV and len(op.inputs) > 1}
    constants = [t for t in graph.tensors if t.data_bytes > 0]
    packed = sum(t.data_bytes for t in constants if t.index in packed_filters)
    floats = sum(t.data_bytes for t in constants
                 if t.dtype in FLOAT_TYPES and t.index not in packed_filters)
    other = sum(t.data_bytes for t in constants) - packed - floats
    activations = [t.activation_bytes for t in graph.tensors if t.data_bytes == 0]
    bconvs = []
    for op in graph.operators:
        if op.type != BINARY_CONV:
            continue
        filt, out = graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
        bconvs.append({
            "output_tensor": out.name, "channels_in": op.options.get("channels_in"),
            "channels_out": filt.shape[0], "kernel": list(filt.shape[1:3]),
            "padding": "SAME" if op.options.get("padding") == 0 else "VALID",
            "pad_values": op.options.get("pad_values"),
            "output": "bitpacked" if out.dtype == "INT32" else out.dtype.lower(),
        })
    return Inspection(
        ops=ops, total_bytes=graph.file_bytes, float_weight_bytes=floats,
        bitpacked_weight_bytes=packed, other_constant_bytes=other,
        largest_activation_bytes=max(activations, default=0), binary_convs=bconvs,
        tensors=[{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                  "constant_bytes": t.data_bytes} for t in graph.tensors])
