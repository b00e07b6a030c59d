"""Model data for the project's own C runtime (``firmware/``): packed weights, thresholds.

From :func:`converters.fold.fold` this writes ``model_data.h``/``model_data.c``:

- one ``bnn_layer`` descriptor per layer (``firmware/src/bnn.h``);
- the first conv's weights in {-1, 0, +1} as int16 pairs (:func:`int16_pairs`; it
  reads the int8 input ``pixel - 128``, see ``converters.fold.INPUT_SCALE``);
- binary weights bit-packed as LCE packs them (bit ``c % 32`` of word ``c // 32``
  is 1 for -1), each filter one bit stream over its patch (:func:`filter_bits`):
  the same as LCE's OHWI words when ``Cin % 32 == 0``, without padding bits
  otherwise;
- binary layers on 16 input channels (a pruned 32-channel layer, say) with dense
  weights and "+1" padding in the pair layout (:func:`pair_bits`, op
  ``BNN_BCONV_PAIRS``): one word per tap holding its 16 channels twice, so the C
  runtime runs two output pixels per pass with full words;
- ternary layers whose zeros are scattered through every word in the masked layout
  (:func:`masked_stream`, op ``BNN_BCONV_MASKED``): each word's signs and nonzero mask,
  no word lists (:func:`masked_pays` decides);
- other ternary layers (zeros from unstructured pruning) as the nonzero words of each
  filter's bit stream with their word numbers (:func:`ternary_stream`): an empty
  word costs nothing, a full one its sign word, a partial one a mask word more;
- per-channel int32 thresholds (output +1 iff ``S >= t``) and, for the last conv,
  float32 ``scale``/``offset`` so that ``logit = scale * S + offset``;
- test vectors: int8 inputs and the exact int32 sums ``S`` of the last conv, from
  the numpy integer reference (which equals Keras up to float rounding).

The arena (two ping-pong halves of packed activations, then the largest input
patch of one output pixel, and its mask where zero padding occurs or a second
pixel's patch for ternary layers) is sized here,
so the firmware needs no dynamic allocation. :func:`make`, :func:`run`, :func:`size`, :func:`flash` and
:func:`count_instructions` build and run ``firmware/`` on the host, under QEMU or
on a real board.

Example::

    import bnnprune_tf
    from bnnprune_tf import data, models
    from converters import c_export

    model = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    x, _ = data.load("mnist5k").arrays("test", limit=4)
    info = c_export.write(model, "firmware/build/model", samples=x)
    print(info["arena_bytes"], info["weight_bytes"])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnnprune_tf import files, prune
from bnnprune_tf.errors import ConversionError
from converters import firmware
from converters import fold as fold_lib
from converters import sbnn

OPS = {"first": "BNN_CONV_FIRST", "binary": "BNN_BCONV", "pool": "BNN_MAXPOOL",
       "output": "BNN_OUTPUT_CONV", "affine": "BNN_SBCONV", "slices": "BNN_INPUT_SLICES",
       "pairs": "BNN_BCONV_PAIRS", "masked": "BNN_BCONV_MASKED"}
OP_NUMBERS = {name: i for i, name in enumerate(OPS)}     # the order of enum bnn_op (bnn.h)


def words(channels: int) -> int:
    """32-bit words per pixel of ``channels`` packed channels."""
    return -(-channels // 32)


def pack_bits(signs: np.ndarray) -> np.ndarray:
    """Pack the last axis (values +-1; 0 counts as +1) into uint32 words, LCE-style:
    bit ``c % 32`` of word ``c // 32`` is 1 where the value is -1.

    Example::

        pack_bits(np.array([-1, 1, -1]))   # -> array([5], dtype=uint32)
    """
    signs = np.asarray(signs)
    c = signs.shape[-1]
    bits = np.zeros((*signs.shape[:-1], words(c) * 32), np.uint64)
    bits[..., :c] = signs < 0
    bits = bits.reshape(*signs.shape[:-1], words(c), 32)
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)


def patch_words(bits: int) -> int:
    """Words of a filter's bit stream of ``bits`` bits: a multiple of 3 (the C kernels add
    up three words at a time), as ``BNN_PATCH_WORDS`` in ``firmware/src/bnn.h``."""
    return -(-bits // 96) * 3


def filter_bits(weights: np.ndarray) -> np.ndarray:
    """Each filter of an OHWI kernel (values +-1) as one bit stream over its patch, the C
    runtime's layout (``firmware/src/bnn.h``): bit ``tap * Cin + c``, 1 for -1, padded
    with zero words to :func:`patch_words`. With ``Cin % 32 == 0`` this is LCE's
    packing; with 16 channels two taps share a word.

    Example::

        filter_bits(np.ones((2, 3, 3, 16))).shape   # -> (2, 6): 144 bits, 5 words + 1
    """
    weights = np.asarray(weights)
    flat = weights.reshape(weights.shape[0], -1)
    packed = pack_bits(flat)
    return np.pad(packed, ((0, 0), (0, patch_words(flat.shape[1]) - packed.shape[1])))


def pair_bits(weights: np.ndarray) -> np.ndarray:
    """Filters of an OHWI kernel on 16 input channels (values +-1) in the C runtime's pair
    layout (``BNN_BCONV_PAIRS``, ``firmware/src/bconv_pair.c``): word ``k`` holds tap
    ``k``'s 16 channel bits (1 for -1) in its low and again in its high half, the words
    padded with zeros to a multiple of 3.

    Example::

        pair_bits(-np.ones((1, 3, 3, 16))).shape   # -> (1, 9), every word 0xffffffff
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[-1] != 16:
        raise ConversionError(f"the pair layout needs OHWI weights on 16 input channels; got "
                              f"shape {weights.shape}")
    taps = pack_bits(weights.reshape(weights.shape[0], -1, 16))[..., 0]       # (O, taps)
    taps = taps | (taps << np.uint32(16))
    return np.pad(taps, ((0, 0), (0, -(-taps.shape[1] // 3) * 3 - taps.shape[1])))


def ternary_stream(weights: np.ndarray) -> dict[str, np.ndarray]:
    """A ternary OHWI kernel (values -1, 0, +1) in the C runtime's sparse format.

    Each filter's bit stream (:func:`filter_bits`) is cut into words: an empty word
    (all weights zero) is stored nowhere and never visited; a full word (no zero)
    stores its sign word; a partial word stores its sign word and a word with 1 where
    the weight is nonzero. Per filter, ``stream`` holds the full words' signs, then the
    partial words' (sign, nonzero) pairs; ``index`` their word numbers in the same
    order; ``counts`` (full, partial); ``nonzeros`` its count of nonzero weights.

    Example::

        t = ternary_stream(np.array([[[[1, 0, -1]]], [[[0, 0, 0]]]]))
        t["stream"], t["index"], t["counts"]   # -> [4, 5], [0], [0, 1, 0, 0]
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or not np.isin(weights, (-1, 0, 1)).all():
        raise ConversionError(f"ternary weights must be OHWI with values -1, 0, +1; got shape "
                              f"{weights.shape}")
    o = weights.shape[0]
    signs = filter_bits(weights)
    nonzero = filter_bits(np.where(weights != 0, -1, 1))
    valid = filter_bits(-np.ones((1, weights[0].size)))[0]
    stream, index, counts = [], [], []
    for f in range(o):
        full = np.flatnonzero((nonzero[f] == valid) & (valid != 0))
        partial = np.flatnonzero((nonzero[f] != 0) & (nonzero[f] != valid))
        stream += list(signs[f, full])
        for k in partial:
            stream += [signs[f, k], nonzero[f, k]]
        index += list(full) + list(partial)
        counts += [len(full), len(partial)]
    return {"stream": np.asarray(stream, np.uint32), "index": np.asarray(index, np.uint16),
            "counts": np.asarray(counts, np.uint16),
            "nonzeros": (weights != 0).reshape(o, -1).sum(1).astype(np.int32)}


def masked_stream(weights: np.ndarray) -> np.ndarray:
    """A ternary OHWI kernel (values -1, 0, +1) in the C runtime's masked layout
    (``BNN_BCONV_MASKED``, ``firmware/src/bconv_masked.c``): each filter's bit stream
    (:func:`filter_bits`) in steps of 3 words, the 3 sign words (1 for -1) then 3 mask
    words (1 where the weight is nonzero). Shape ``(O, 2 * patch words)``.

    Example::

        masked_stream(np.array([[[[1, 0, -1]]]]))   # -> [[4, 0, 0, 5, 0, 0]]
    """
    weights = np.asarray(weights)
    signs = filter_bits(weights).reshape(weights.shape[0], -1, 1, 3)
    nonzero = filter_bits(np.where(weights != 0, -1, 1)).reshape(weights.shape[0], -1, 1, 3)
    return np.concatenate([signs, nonzero], axis=2).reshape(weights.shape[0], -1)


def masked_pays(weights: np.ndarray) -> bool:
    """Whether the masked layout runs a ternary OHWI kernel in fewer Cortex-M4
    instructions than the word lists (:func:`ternary_stream`): 31 per 3 words for every
    word, against 32 per 3 full words and 37 per 3 partial ones for the stored words
    only (the assembly kernels' counts). Scattered zeros leave no word empty, so the
    masked layout wins; zeros in whole words favour the lists, which skip them.

    Example::

        masked_pays(np.random.default_rng(0).choice([-1, 0, 1], (8, 3, 3, 32)))   # -> True
    """
    t = ternary_stream(weights)
    full, partial = int(t["counts"][0::2].sum()), int(t["counts"][1::2].sum())
    words = filter_bits(weights).size
    return 31 * words < 32 * full + 37 * partial


def int16_pairs(weights: np.ndarray) -> np.ndarray:
    """First-conv weights (OHWI) as uint32 words of two int16 values (little-endian pairs
    for SMLAD), each filter padded with a 0 to an even count.

    Example::

        int16_pairs(np.array([[[[1, -1, 1]]]]))   # -> [[0xffff0001, 0x00000001]]
    """
    flat = np.asarray(weights).reshape(weights.shape[0], -1).astype(np.int64)
    flat = np.pad(flat, ((0, 0), (0, flat.shape[1] % 2)))
    halves = flat.astype(np.uint16).astype(np.uint32)
    return halves[:, 0::2] | (halves[:, 1::2] << np.uint32(16))


def _array(ctype: str, name: str, values, per_line: int = 12) -> list[str]:
    flat = np.asarray(values).reshape(-1)
    if ctype == "float":
        items = [f"{float(np.float32(v))!r}f" for v in flat]
    elif ctype == "uint32_t":
        items = [f"0x{int(v):08x}u" for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = [f"static const {ctype} {name}[{max(len(items), 1)}] = {{"]
    lines += ["  " + ", ".join(items[i:i + per_line]) + "," for i in range(0, len(items), per_line)]
    return lines + ([] if items else ["  0"]) + ["};"]


def plan(folded: fold_lib.Folded) -> list[dict]:
    """Layer descriptors (shapes, padding, kind) the C runtime executes, in order.

    Raises:
        ConversionError: a layer arrangement the C runtime does not run.
    """
    shape = tuple(folded.input_shape)
    out = []
    for i, layer in enumerate(folded.layers):
        if isinstance(layer, fold_lib.Reshape):
            if any(isinstance(l, fold_lib.Conv) for l in folded.layers[:i]):
                raise ConversionError(
                    f"layer {layer.name!r}: a reshape between binary layers changes the bit "
                    "packing; the C runtime supports reshapes only before the first conv")
            shape = layer.shape if len(layer.shape) == 3 else (1, 1, int(np.prod(layer.shape)))
            continue
        if len(shape) != 3:
            shape = (1, 1, int(np.prod(shape)))
        h, w, c = shape
        if isinstance(layer, fold_lib.BitSlices):
            out.append(dict(layer=layer, kind="slices", in_shape=(h, w, c),
                            out_shape=(h, w, c * len(layer.slices)), kernel=(1, 1),
                            strides=(1, 1), pad=(0, 0), pad_value=0))
            shape = out[-1]["out_shape"]
            continue
        if isinstance(layer, fold_lib.MaxPool):
            (kh, kw), (sh, sw) = layer.pool_size, layer.strides
        else:
            (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
        if layer.padding == "same":
            top, left = fold_lib.same_padding(h, kh, sh)[0], fold_lib.same_padding(w, kw, sw)[0]
            ho, wo = -(-h // sh), -(-w // sw)
        else:
            top = left = 0
            ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if isinstance(layer, fold_lib.MaxPool):
            kind, cout = "pool", c
        elif isinstance(layer, fold_lib.OutputConv):
            if layer.input_scale != 1.0:
                raise ConversionError(f"layer {layer.name!r}: the C runtime needs at least one "
                                      "binary layer before the last conv")
            kind, cout = "output", layer.weights.shape[0]
        elif isinstance(layer, fold_lib.AffineConv):
            kind, cout = "affine", layer.weights.shape[0]
        else:
            kind, cout = ("first" if layer.input_scale != 1.0 else "binary"), layer.weights.shape[0]
        out.append(dict(layer=layer, kind=kind, in_shape=(h, w, c), out_shape=(ho, wo, cout),
                        kernel=(kh, kw), strides=(sh, sw), pad=(top, left),
                        pad_value=getattr(layer, "pad_value", 0)))
        shape = (ho, wo, cout)
    if out[0]["kind"] not in ("first", "slices") or out[-1]["kind"] != "output":
        raise ConversionError("the C runtime runs models that start with a conv on the real "
                              "input and end in a conv with real outputs")
    return out


def render(folded: fold_lib.Folded, test_inputs: np.ndarray | None = None,
           labels: np.ndarray | None = None) -> tuple[str, str, dict]:
    """``(model_data.h, model_data.c, info)`` for ``folded``; ``info`` has the sizes.

    Example::

        header, source, info = render(fold_lib.fold(model), codes[:4])
    """
    steps = plan(folded)
    tests = np.zeros((0, *folded.input_shape), np.int8) if test_inputs is None else \
        np.asarray(test_inputs, np.int8)
    body = ["/* Generated by converters.c_export; do not edit. */", '#include "model_data.h"', ""]
    descriptors, weight_bytes, max_words, scratch = [], 0, 0, 0
    sparse = packed = first = pixel_pairs = False   # model_data.h flags: the code paths needed
    ops = set()
    for i, step in enumerate(steps):
        layer, kind = step["layer"], step["kind"]
        (h, w, c), (ho, wo, cout) = step["in_shape"], step["out_shape"]
        fields = dict(op=OPS[kind], in_h=h, in_w=w, in_c=c, out_h=ho, out_w=wo, out_c=cout,
                      k_h=step["kernel"][0], k_w=step["kernel"][1], stride_h=step["strides"][0],
                      stride_w=step["strides"][1], pad_top=step["pad"][0], pad_left=step["pad"][1],
                      pad_value=step["pad_value"], weights="0", counts="0", index="0",
                      nonzeros="0", thresholds="0", scale="0", offset="0")
        if kind != "output":
            max_words = max(max_words, ho * wo * words(cout))
        taps = step["kernel"][0] * step["kernel"][1]
        layer_thresholds = getattr(layer, "thresholds", None)
        padded = step["pad"] != (0, 0) or (ho - 1) * step["strides"][0] + step["kernel"][0] > h \
            or (wo - 1) * step["strides"][1] + step["kernel"][1] > w
        if kind == "binary" and c == 16 and (layer.weights != 0).all() and \
                not (padded and step["pad_value"] == 0):
            kind = "pairs"                       # two output pixels per pass (bconv_pair.c)
            fields["op"] = OPS[kind]
            scratch = max(scratch, patch_words(32 * taps))
            bits = pair_bits(layer.weights)
            body += _array("uint32_t", f"w{i}", bits)
            fields["weights"] = f"w{i}"
            weight_bytes += 4 * bits.size
        elif kind == "binary" and (layer.weights == 0).any() and \
                not (padded and step["pad_value"] == 0) and masked_pays(layer.weights):
            kind = "masked"                       # scattered zeros: signs and masks
            fields["op"] = OPS[kind]
            stream = masked_stream(layer.weights)
            body += _array("uint32_t", f"w{i}", stream)
            fields["weights"] = f"w{i}"
            weight_bytes += 4 * stream.size
            layer_thresholds = layer.thresholds - (layer.weights != 0).reshape(cout, -1).sum(1)
            scratch = max(scratch, patch_words(taps * c))
            packed |= c % 32 != 0
        ops.add(kind)
        if kind in ("binary", "output"):
            ternary = kind == "binary" and bool((layer.weights == 0).any())
            # + zero-padding mask, or a second patch (ternary: two pixels at a time)
            mask = 2 if (padded and step["pad_value"] == 0) or ternary else 1
            pixel_pairs |= ternary
            scratch = max(scratch, mask * patch_words(taps * c))
            sparse |= mask == 2 or bool((layer.weights == 0).any())
            packed |= c % 32 != 0
        elif kind == "first":
            # its scratch is the arena's other half: int16 values or the padded image
            hp = (ho - 1) * step["strides"][0] + step["kernel"][0]
            wp = (wo - 1) * step["strides"][1] + step["kernel"][1]
            max_words = max(max_words, taps * c // 2 + 1, -(-hp * wp * c // 4))
        if kind == "slices":
            body += _array("uint8_t", f"b{i}", layer.slices)
            fields["weights"] = f"b{i}"
        elif kind == "first":
            pairs = int16_pairs(layer.weights)
            first = step["kernel"] == (3, 3) and c == 1
            body += _array("uint32_t", f"w{i}", pairs)
            fields["weights"] = f"w{i}"
            weight_bytes += 4 * pairs.size
        elif kind in ("binary", "output") and (layer.weights == 0).any():
            t = ternary_stream(layer.weights)
            for prefix, ctype, key in (("w", "uint32_t", "stream"), ("i", "uint16_t", "index"),
                                       ("c", "uint16_t", "counts"), ("n", "int32_t", "nonzeros")):
                body += _array(ctype, f"{prefix}{i}", t[key])
                weight_bytes += t[key].itemsize * t[key].size
            fields.update(weights=f"w{i}", index=f"i{i}", counts=f"c{i}", nonzeros=f"n{i}")
        elif kind in ("binary", "output"):
            bits = filter_bits(layer.weights)
            body += _array("uint32_t", f"w{i}", bits)
            fields["weights"] = f"w{i}"
            weight_bytes += 4 * bits.size
        if kind == "affine":     # SBNN: connection lists (converters.sbnn)
            hp = (ho - 1) * step["strides"][0] + step["kernel"][0]
            wp = (wo - 1) * step["strides"][1] + step["kernel"][1]
            if step["kernel"][0] * c * wp >= 65536:
                raise ConversionError(f"layer {layer.name!r}: its input map is too wide for "
                                      "the C runtime's 16-bit connection offsets")
            lists = sbnn.connection_stream(layer)
            thresholds, flips = sbnn.decisions(layer)
            flip_bits = pack_bits(np.where(flips, -1, 1))
            body += (_array("uint32_t", f"w{i}", lists["words"])
                     + _array("uint32_t", f"f{i}", flip_bits)
                     + _array("int64_t", f"t{i}", thresholds))
            fields.update(weights=f"w{i}", flips=f"f{i}", thresholds64=f"t{i}",
                          ratio=f"{layer.ratio}LL", connections=lists["connections"],
                          rice_k=lists["k"])
            weight_bytes += 4 * lists["words"].size + 4 * flip_bits.size + 8 * cout
            # decoded in the scratch: 16-bit offsets and 16-bit counts
            decoded = -(-2 * (lists["connections"] + cout) // 4)
            scratch = max(scratch, -(-(hp * c * wp + 4) // 4) + hp * wp + decoded)
        if kind in ("first", "binary", "pairs", "masked"):
            body += _array("int32_t", f"t{i}", layer_thresholds)
            fields["thresholds"] = f"t{i}"
            weight_bytes += 4 * cout
        if kind == "output":
            body += _array("float", f"s{i}", layer.scale) + _array("float", f"o{i}", layer.offset)
            fields["scale"], fields["offset"] = f"s{i}", f"o{i}"
            weight_bytes += 8 * cout
        descriptors.append("  {" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "},")
        body.append("")
    classes = int(np.prod(steps[-1]["out_shape"]))
    size = int(np.prod(folded.input_shape))
    sums = folded.output.sums(folded.hidden(tests)).reshape(len(tests), -1) if len(tests) else \
        np.zeros((0, classes), np.int64)
    body += ["static const bnn_layer layers[] = {", *descriptors, "};", "",
             f"const bnn_model bnn_model_data = {{.num_layers = {len(steps)}, .layers = layers, "
             f".input_size = {size}, .num_classes = {classes}, .half_words = {max_words}}};", ""]
    test_rows = tests.reshape(len(tests), -1) if len(tests) else np.zeros((1, size), np.int8)
    sum_rows = sums if len(tests) else np.zeros((1, classes), np.int64)
    body += [f"const int8_t bnn_test_inputs[{len(test_rows)}][{size}] = {{",
             *["  {" + ", ".join(str(int(v)) for v in row) + "}," for row in test_rows], "};",
             f"const int32_t bnn_test_sums[{len(sum_rows)}][{classes}] = {{",
             *["  {" + ", ".join(str(int(v)) for v in row) + "}," for row in sum_rows], "};"]
    label_rows = np.asarray(labels if labels is not None and len(tests) else
                            np.full(max(len(tests), 1), -1), np.int64)
    body += [f"const int16_t bnn_test_labels[{len(label_rows)}] = {{"
             + ", ".join(str(int(v)) for v in label_rows) + "};"]
    arena_words = 2 * max_words + scratch
    header = "\n".join([
        "/* Generated by converters.c_export; do not edit. */",
        "#ifndef BNN_MODEL_DATA_H", "#define BNN_MODEL_DATA_H", '#include "bnn.h"', "",
        f"/* model {folded.name}: int8 input {list(folded.input_shape)} = pixel - 128, "
        f"{classes} classes, {len(steps)} layers */",
        f"#define BNN_INPUT_SIZE {size}",
        f"#define BNN_NUM_CLASSES {classes}",
        f"#define BNN_ARENA_WORDS {arena_words}",
        f"#define BNN_NUM_TESTS {len(tests)}",
        f"#define BNN_SPARSE {int(sparse)}   /* ternary layers or zero padding */",
        f"#define BNN_TERNARY_PAIRS {int(pixel_pairs)}   /* ternary BNN_BCONV layers: pixel pairs "
        "(two patches in the scratch) */",
        f"#define BNN_PACKED_TAPS {int(packed)}   /* binary layers with in_c % 32 != 0 */",
        f"#define BNN_FIRST_3X3X1 {int(first)}   /* first conv: 3x3 kernel, one channel */",
        f"#define BNN_OPS 0x{sum(1 << OP_NUMBERS[k] for k in ops):02x}u   /* bit op: the model "
        "uses op (enum bnn_op) */",
        "#define BNN_USES(op) ((BNN_OPS >> (op)) & 1u)   /* 0: its kernel is not linked */",
        "extern const bnn_model bnn_model_data;",
        f"extern const int8_t bnn_test_inputs[][{size}];",
        f"extern const int32_t bnn_test_sums[][{classes}];",
        "extern const int16_t bnn_test_labels[];",
        "#endif", ""])
    info = {"layers": len(steps), "weight_bytes": int(weight_bytes),
            "arena_bytes": 4 * arena_words, "input_bytes": size, "tests": len(tests),
            "classes": classes}
    return header, "\n".join(body) + "\n", info


def write(model, out_dir, samples=None, labels=None, boards=()) -> dict:
    """Fold ``model`` and write ``model_data.h``/``model_data.c`` into ``out_dir``.

    A masked model (:mod:`bnnprune_tf.masks`) is first stripped
    (:func:`bnnprune_tf.prune.strip_pruning` with ``keep_weight_masks``): pruned
    filters are removed, pruned weights become ternary zeros.

    ``samples`` (real inputs, e.g. ``Dataset.arrays("test")[0][:10]``) become test
    vectors with their exact expected sums; ``labels`` are printed beside them. The model
    must fit each of ``boards`` (:func:`converters.firmware.check_fits`), checked before
    any file is written.

    Raises:
        ConversionError: a layer the C runtime cannot run (named in the message).
        FirmwareError: the model does not fit one of ``boards``.

    Example::

        write(model, "firmware/build/model", samples=x[:10], labels=y[:10])
    """
    if samples is not None:
        from converters.lce import check_finite

        check_finite(samples, "samples")
    folded = fold_lib.fold(prune.strip_pruning(model, keep_weight_masks=True))
    codes = None if samples is None else folded.quantize_input(samples)
    header, source, info = render(folded, codes, labels)
    for board in boards:
        firmware.check_fits(info, board)
    out = Path(out_dir)
    files.write_text(out / "model_data.h", header)
    files.write_text(out / "model_data.c", source)
    return {**info, "dir": str(out)}
