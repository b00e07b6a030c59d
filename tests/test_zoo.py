"""larq-zoo architectures (larq-zoo 2.4.0, a test dependency) prune and shrink exactly:
the masked and the shrunk model give the same logits, binary MACs fall, and (for a few,
to keep the suite fast) LCE keeps every binary conv binary.

The suite runs one model of each family plus every distinct graph feature (residual adds,
concats, dilation, grouped convs, 2-bit DoReFa, XNOR's scaling); ``benchmarks/zoo.py``
runs all 14 (``benchmarks/results/zoo.md``)."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import zoo
from bnnprune_tf import profile, prune
from converters import lce, lint

CONVERTED = ("BiRealNet",)     # residual adds; the others: benchmarks/zoo.py
#: the larger members of a family share their graph with one here: QuickNet(Large) with
#: QuickNetSmall, BinaryDenseNet37/45 with BinaryDenseNet28
SUITE = tuple(n for n in zoo.NAMES
              if n not in ("QuickNet", "QuickNetLarge", "BinaryDenseNet37", "BinaryDenseNet45"))


@pytest.mark.parametrize("name", SUITE)
def test_zoo_model_prunes_and_shrinks_exactly(name):
    model = zoo.build(name)
    weights = model.get_weights()
    x = zoo.inputs(model, 2, seed=1)
    before = profile.profile(model)
    for round_to in (None, "lce"):
        masked = prune.prune_filters(model, "random", ratio=0.5, round_to=round_to)
        small = prune.strip_pruning(masked)
        gap, same_argmax = zoo.logit_gap(masked, small, x)
        assert same_argmax and gap <= 1e-4, (round_to, gap)
        after = profile.profile(small)
        assert zoo.quantized_macs(after) < zoo.quantized_macs(before)
        assert after.binary_macs < before.binary_macs or before.binary_macs == 0   # DoReFaNet
        assert small.count_params() < model.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    if name in CONVERTED:       # every conv lint expects binary in the unpruned model stays so
        ops = lce.inspect(lce.convert(small)).ops
        binary = len(lint.binary_conv_layers(model))
        convs = sum(isinstance(l, tf.keras.layers.Conv2D) for l in model.layers)
        assert ops.get(lce.BINARY_CONV, 0) == binary > 0
        assert ops.get("CONV_2D", 0) == convs - binary
