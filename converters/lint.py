"""Before converting: which layers will LCE not run as fast binary ops, why, and the fix.

Each rule encodes one documented converter behaviour (larq compute-engine
0.16: ``prepare_patterns_common.td``, ``prepare_tf.cc`` ``IsBinaryFilter``,
``optimize_patterns_common.td``; summarised in ``../shared/reference/lce.md``):

============================ ======== =============================================
rule                         severity what happens in LCE
============================ ======== =============================================
``quant-dense``              float    binary QuantDense -> float FULLY_CONNECTED
``quant-depthwise``          float    binary QuantDepthwiseConv2D -> float op
``float-input``              float    binary kernel, no input quantizer -> CONV_2D
                                      (``info`` for the first layer: by design)
``input-quantizer``          float    input quantizer not sign-like (0/1, ternary,
                                      multi-bit) -> float CONV_2D
``zero-weights``             float    quantized kernel has zeros -> float CONV_2D
``non-binary-kernel``        float    kernel not +-scale per output channel
``same-zero-padding``        slow     padding="same" without pad_values=1.0:
                                      float output + LceQuantize, no fusion
``bn-before-activation``     slow     conv -> BN -> ReLU: ReLU not fused, float
                                      output + RELU + LceQuantize
``packing-words``            slow     input channels not a multiple of 32: the
                                      last 32-bit word is partly wasted
``bn-threshold-tie``         tie      conv -> BN -> sign with a channel's threshold
                                      on a sum the conv can produce (to float32
                                      precision): Keras and LCE may round it apart
============================ ======== =============================================

Layers without any quantizer (plain ``Conv2D``/``Dense``) are float on purpose
and are not listed.

Example::

    from converters.lint import lint
    for finding in lint(model):
        print(finding)          # fc1 [quant-dense] ... -> fix: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, prune, thresholds
from bnnprune_tf.errors import ConversionError
from bnnprune_tf.reporting import markdown_table

layers = tf.keras.layers
FLT_EPSILON = float(np.finfo(np.float32).eps)
BINARY_TOLERANCE = 0.005          # IsBinaryFilter: | |w / s| - 1 | <= 0.005
WORD_BITS = 32                    # LCE bit-packs channels into 32-bit words
_SHAPE_ONLY = (layers.InputLayer, layers.Reshape, layers.Flatten, layers.ZeroPadding2D,
               layers.Permute)
_FUSABLE_ACTIVATIONS = {"relu", "relu6"}


@dataclass(frozen=True)
class Finding:
    """One layer LCE will not run as a fast binary op, with the reason and the fix."""

    layer: str
    rule: str
    # "float": becomes a float op; "slow": binary but slower; "tie": Keras and LCE may
    # differ; "info": by design
    severity: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.layer} [{self.rule}, {self.severity}] {self.problem} -> fix: {self.fix}"

    def to_dict(self) -> dict:
        return asdict(self)


def binary_filter_problem(kernel: np.ndarray) -> str | None:
    """Why LCE's ``IsBinaryFilter`` rejects an HWIO ``kernel``, or None if it accepts it.

    The filter must be ``+-s_o`` in output channel ``o`` with ``s_o = |w[0,0,0,o]|``
    greater than FLT_EPSILON and every ``| |w / s_o| - 1 | <= 0.005``.

    Example::

        binary_filter_problem(np.sign(np.random.randn(3, 3, 8, 4)))   # None
    """
    w = kernel.reshape(-1, kernel.shape[-1])
    zeros = int((w == 0).sum())
    if zeros:
        channels = np.flatnonzero((w == 0).any(axis=0)).tolist()
        return (f"{zeros} of {w.size} quantized weights are 0 (output channels "
                f"{channels[:8]}{'...' if len(channels) > 8 else ''})")
    scale = np.abs(w[0])
    if (scale <= FLT_EPSILON).any():
        return "an output channel has scale 0"
    off = np.abs(np.abs(w / scale) - 1.0)
    if (off > BINARY_TOLERANCE).any():
        return (f"weights are not +-1 (or +-scale per output channel): up to "
                f"{off.max():.3g} away from it")
    return None


class _Graph:
    """Producers and consumers of each layer, from the model's public config."""

    def __init__(self, model: tf.keras.Model):
        self.layers = {layer.name: layer for layer in model.layers}
        self.producers: dict[str, list[str]] = {name: [] for name in self.layers}
        self.consumers: dict[str, list[str]] = {name: [] for name in self.layers}
        if isinstance(model, tf.keras.Sequential):
            names = [layer.name for layer in model.layers]
            for a, b in zip(names, names[1:]):
                self._edge(a, b)
            return
        try:
            config = model.get_config()
        except NotImplementedError as e:
            raise ConversionError(f"lint needs a Sequential or functional model; {model.name!r} "
                                  f"has no config ({e}): rebuild it with the functional API") from e
        for layer_config in config["layers"]:
            for node in layer_config.get("inbound_nodes", []):
                for inbound in node if isinstance(node, list) else []:
                    if isinstance(inbound, list) and inbound and isinstance(inbound[0], str):
                        self._edge(inbound[0], layer_config["name"])

    def _edge(self, producer: str, consumer: str):
        if producer in self.layers and consumer in self.layers:
            self.producers[consumer].append(producer)
            self.consumers[producer].append(consumer)

    def is_stem(self, name: str) -> bool:
        """Whether ``name`` reads the model input (through shape-only layers)."""
        todo = list(self.producers[name])
        while todo:
            layer = self.layers[todo.pop()]
            if isinstance(layer, layers.InputLayer):
                return True
            if isinstance(layer, _SHAPE_ONLY):
                todo += self.producers[layer.name]
        return not self.producers[name]      # a Sequential's first layer

    def single_consumer_chain(self, name: str):
        """Layers after ``name`` while each has exactly one consumer."""
        while len(self.consumers[name]) == 1:
            name = self.consumers[name][0]
            yield self.layers[name]


def _is_relu(layer) -> bool:
    if isinstance(layer, layers.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    if isinstance(layer, layers.Activation):
        return getattr(layer.activation, "__name__", "") in _FUSABLE_ACTIVATIONS
    return False


def _dense_findings(layer) -> list[Finding]:
    if not (layer_facts.is_binary_input(layer) or layer.kernel_quantizer is not None):
        return []
    return [Finding(
        layer.name, "quant-dense", "float",
        "LCE has no binary fully connected op: QuantDense becomes a float FULLY_CONNECTED "
        "with float32 weights (32x the bytes of bit-packed ones)",
        "write it as Reshape((1, 1, -1)) -> QuantConv2D(units, 1) -> Reshape((-1,)) "
        "(see bnnprune_tf.models.binary_mlp), or over the feature map a k x k valid QuantConv2D")]


def _depthwise_findings(layer) -> list[Finding]:
    if not (layer_facts.is_binary_input(layer) or layer.depthwise_quantizer is not None):
        return []
    return [Finding(
        layer.name, "quant-depthwise", "float",
        "LCE has no binary depthwise op: it becomes LceDequantize -> float DEPTHWISE_CONV_2D",
        "keep it float on purpose (drop its quantizers) or replace it by a full QuantConv2D")]


def _conv_findings(layer, graph: _Graph, ties: dict[str, str]) -> list[Finding]:
    """``ties``: conv -> its BatchNorm, where that is a threshold on integer sums."""
    name, found = layer.name, []
    if layer.input_quantizer is None:
        if layer.kernel_quantizer is None:
            return []                                   # a float conv by design
        stem = graph.is_stem(name)
        return [Finding(
            name, "float-input", "info" if stem else "float",
            "no input quantizer, so the input stays float and LCE runs a float CONV_2D"
            + (" (expected for the first layer)" if stem else ""),
            "nothing to do for the first layer" if stem else
            "add input_quantizer='ste_sign' so LCE can bit-pack the input")]
    if not layer_facts.is_binary_input(layer):
        found.append(Finding(
            name, "input-quantizer", "float",
            f"input quantizer {type(layer.input_quantizer).__name__} does not output only -1/+1, "
            "so LCE cannot bit-pack the input and runs a float CONV_2D",
            "use a sign quantizer: ste_sign, approx_sign, swish_sign or SteSign(clip_value)"))
        return found
    affine = layer_facts.weight_domain(layer) is layer_facts.WeightDomain.AFFINE
    # SBNN {alpha, beta}: converters.sbnn.lce_form runs it as a binary conv + a shared term
    problem = None if affine else binary_filter_problem(layer_facts.quantized_kernel(layer))
    if problem and "are 0" in problem:
        found.append(Finding(
            name, "zero-weights", "float",
            f"{problem}: LCE needs +-1 (or +-scale) weights and falls back to a float CONV_2D "
            "with float32 weights (about 11x larger)",
            "remove pruned channels physically (shrink the layer) instead of zeroing them, "
            "and use a kernel quantizer that maps 0 to +1 such as ste_sign"))
        return found
    if problem:
        found.append(Finding(
            name, "non-binary-kernel", "float",
            f"{problem}: LCE keeps a float CONV_2D fed by LceDequantize",
            "set kernel_quantizer='ste_sign' (or magnitude_aware_sign)"))
        return found
    if layer.padding == "same" and float(getattr(layer, "pad_values", 0.0)) != 1.0:
        found.append(Finding(
            name, "same-zero-padding", "slow",
            "padding='same' pads with 0, which is not a binary value: LCE corrects for it, "
            "writes float output and re-quantizes (no fused activation or bit-packed output; "
            "unsupported on target 'xcore')",
            "set pad_values=1.0 on the QuantConv2D"))
    chain_has_bn = False
    for nxt in graph.single_consumer_chain(name):
        if isinstance(nxt, layers.BatchNormalization):
            chain_has_bn = True
        elif _is_relu(nxt) and chain_has_bn:
            found.append(Finding(
                name, "bn-before-activation", "slow",
                f"BatchNorm then {nxt.name} (ReLU): LCE fuses an activation only when it comes "
                "straight after the conv, so it writes float output, runs RELU and re-quantizes",
                "apply the ReLU before BatchNorm: QuantConv2D(..., activation='relu') -> "
                "BatchNormalization"))
            break
        elif not isinstance(nxt, (layers.MaxPool2D, layers.Dropout)):
            break
    tie = _threshold_tie(layer, graph.layers[ties[name]]) if name in ties else None
    if tie:
        found.append(tie)
    cin = int(layer.kernel.shape[2])
    if cin % WORD_BITS:
        words = -(-cin // WORD_BITS)
        choices = sorted({max(words - 1, 1) * WORD_BITS, words * WORD_BITS})
        found.append(Finding(
            name, "packing-words", "slow",
            f"{cin} input channels fill {words} 32-bit word{'s' if words > 1 else ''} with "
            f"{words * WORD_BITS - cin} bits unused: it costs as much as {words * WORD_BITS} "
            "channels",
            "give the producing layer a multiple of 32 channels ("
            + " or ".join(map(str, choices)) + ")"))
    return found


def _threshold_tie(layer, bn) -> Finding | None:
    """``bn-threshold-tie``: a binary conv whose BatchNorm ``bn`` is a threshold on its
    integer sums ``S`` (:func:`bnnprune_tf.thresholds.threshold_layers`); a threshold ``t``
    within float32 rounding of a value ``S`` takes (but not exactly on it) is a tie that
    Keras (float32) and LCE (its own fused threshold) can settle apart, and the flipped
    bit propagates."""
    step = thresholds.sum_step(layer)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
    taps = int(np.prod(layer.kernel.shape[:3]))
    t = thresholds.sum_threshold(bn, bias, step)           # the BN output is 0 at S = t
    with np.errstate(divide="ignore", invalid="ignore"):   # gamma 0 or an all-zero filter
        nearest = np.round(t)
        tolerance = 4 * FLT_EPSILON * (np.abs(t) + np.abs(np.asarray(bn.moving_mean)) / step
                                       + 1)
        reachable = np.abs(nearest) <= taps
        if layer.padding == "valid" or float(getattr(layer, "pad_values", 0.0)) == 1.0:
            reachable &= (nearest - taps) % 2 == 0          # S = taps - 2 * (-1 count)
        gap = np.abs(t - nearest)    # 0: exactly on it (an untrained BN), no rounding
        ties = np.flatnonzero(np.isfinite(t) & reachable & (gap > 0) & (gap <= tolerance))
    if not len(ties):
        return None
    c = int(ties[0])
    return Finding(
        layer.name, "bn-threshold-tie", "tie",
        f"{bn.name} channel{'s' if len(ties) > 1 else ''} {', '.join(map(str, ties[:8]))}"
        f"{' ...' if len(ties) > 8 else ''}: the sign threshold {t[c]:.7f} of the integer "
        f"sum is {gap[c]:.1e} from {int(nearest[c])}, a sum the conv "
        "produces: Keras (float32) and LCE can decide that tie apart and the flipped bit "
        "propagates (the C runtime and TFLM follow exact arithmetic)",
        "nothing for LCE: converters.lce.convert moves such thresholds half-way between "
        "two integers, keeping every float64 sign; for Keras itself, use "
        "bnnprune_tf.thresholds.centered(model)")


def lint(model: tf.keras.Model) -> list[Finding]:
    """Every layer LCE will not turn into a fast binary op, in model order.

    tfmot pruning wrappers are stripped first (as :func:`converters.lce.convert` does).

    Raises:
        ConversionError: ``model`` is not a Keras model, or it nests models.

    Example::

        findings = lint(model)
        blocking = [f for f in findings if f.severity == "float"]
    """
    if not isinstance(model, tf.keras.Model):
        raise ConversionError(f"lint expects a tf.keras.Model, got {type(model).__name__}")
    model = prune.strip_pruning(model)
    nested = [layer.name for layer in model.layers if isinstance(layer, tf.keras.Model)]
    if nested:
        raise ConversionError(f"lint does not look inside nested models ({', '.join(nested)}): "
                              "build the model as one flat functional model")
    graph = _Graph(model)
    ties = dict(thresholds.threshold_layers(model))
    findings: list[Finding] = []
    for layer in model.layers:
        if isinstance(layer, lq.layers.QuantDense):
            findings += _dense_findings(layer)
        elif isinstance(layer, lq.layers.QuantDepthwiseConv2D):
            findings += _depthwise_findings(layer)
        elif isinstance(layer, lq.layers.QuantConv2D):
            findings += _conv_findings(layer, graph, ties)
    return findings


def binary_conv_layers(model: tf.keras.Model, findings: list[Finding] | None = None) -> list[str]:
    """Names of the QuantConv2D layers that lint expects LCE to turn into ``LceBconv2d``.

    Example::

        expected = len(binary_conv_layers(model))
        assert converters.lce.inspect(convert(model)).ops["LceBconv2d"] == expected
    """
    model = prune.strip_pruning(model)
    findings = lint(model) if findings is None else findings
    as_float = {f.layer for f in findings if f.severity in ("float", "info")}
    return [layer.name for layer in model.layers
            if isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None
            and layer.name not in as_float]


def rows(findings: list[Finding]) -> dict[str, dict]:
    """Table rows of ``findings``: one per finding, keyed ``layer`` (numbered if repeated)."""
    out = {}
    for f in findings:
        key = f.layer if f.layer not in out else f"{f.layer} ({len(out)})"
        out[key] = {"rule": f.rule, "severity": f.severity, "problem": f.problem, "fix": f.fix}
    return out


def to_markdown(findings: list[Finding]) -> str:
    """A markdown table of ``findings`` (or a line saying there are none)."""
    if not findings:
        return "Lint: every quantized layer becomes a fast binary LCE op."
    return markdown_table(rows(findings), "layer")
