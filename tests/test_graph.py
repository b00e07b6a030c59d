import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import masks, models, prune
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph

L = tf.keras.layers
BIN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)


def by_producers(graph):
    return {tuple(g.producers): g for g in graph.groups if g.producers}


def test_sequential_chain_groups():
    g = ChannelGraph(models.build("mnist_bnn", (28, 28, 1), width=0.5))
    groups = by_producers(g)
    assert set(groups) == {("conv_first",), ("conv2",), ("conv3",), ("fc1",)}
    conv2 = groups[("conv2",)]
    assert conv2.prunable and conv2.size == 32
    assert conv2.consumers == ["conv3"] and conv2.per_channel == ["conv2_bn"]
    np.testing.assert_array_equal(conv2.filters["conv2"], np.arange(32))
    assert not groups[("fc1",)].prunable
    assert groups[("fc1",)].fixed_reason == "flows into a softmax, which mixes channels"
    assert g.binary_consumers(conv2) and g.binary_producers(conv2)
    assert not g.binary_producers(groups[("conv_first",)])


def test_residual_stage_is_one_group():
    g = ChannelGraph(models.build("resnet18", (32, 32, 3), width=0.25))
    stage1 = g.groups_of("s1b1_conv")
    assert len(stage1) == 1
    assert stage1[0].producers == ["conv_first", "s1b1_conv", "s1b2_conv", "s1b3_conv", "s1b4_conv"]
    stage2, = g.groups_of("s2b1_conv")
    assert set(stage2.producers) == {"s2b1_conv", "s2b1_shortcut", "s2b2_conv", "s2b3_conv",
                                     "s2b4_conv"}
    assert "fc1" in g.groups_of("s4b4_conv")[0].consumers
    assert len(g.prunable_groups()) == 4


def test_concatenate_and_flatten_map_indices():
    inputs = tf.keras.Input((4, 4, 2))
    a = lq.layers.QuantConv2D(3, 1, name="a", **BIN)(inputs)
    b = lq.layers.QuantConv2D(5, 1, name="b", **BIN)(inputs)
    cat = L.Concatenate(name="cat")([a, b])
    flat = L.Flatten()(L.MaxPool2D(2)(cat))
    out = L.Dense(2, name="head")(flat)
    g = ChannelGraph(tf.keras.Model(inputs, out))
    ga, gb = g.groups_of("a")[0], g.groups_of("b")[0]
    assert ga.consumers == ["head"] and gb.consumers == ["head"]
    keep = {ga.id: np.array([True, False, True]), gb.id: np.array([0, 1, 0, 0, 1], bool)}
    # 2x2 pixels after pooling, 8 channels each: pixel-major, channels a0 a1 a2 b0..b4
    expected = np.tile([1, 0, 1, 0, 1, 0, 0, 1], 4)
    np.testing.assert_array_equal(g.layout_mask(g.inputs["head"], keep), expected)


def test_add_of_concatenation_splits_the_producer():
    inputs = tf.keras.Input((4, 4, 2))
    a = lq.layers.QuantConv2D(3, 1, name="a", **BIN)(inputs)
    b = lq.layers.QuantConv2D(5, 1, name="b", **BIN)(inputs)
    c = lq.layers.QuantConv2D(8, 1, name="c", **BIN)(inputs)
    s = L.Add()([L.Concatenate()([a, b]), c])
    out = L.Dense(2)(L.GlobalAveragePooling2D()(s))
    g = ChannelGraph(tf.keras.Model(inputs, out))
    groups = g.groups_of("c")
    assert sorted(x.producers for x in groups) == [["a", "c"], ["b", "c"]]
    ab = next(x for x in groups if "b" in x.filters)
    np.testing.assert_array_equal(ab.filters["c"], np.arange(3, 8))
    np.testing.assert_array_equal(ab.filters["b"], np.arange(5))


def test_fixed_groups_refuse_pruning():
    model = masks.prunable(models.build("mnist_bnn", (28, 28, 1), width=0.25))
    g = ChannelGraph(model)
    fc1, = g.groups_of("fc1")
    with pytest.raises(ModelError, match="cannot be pruned: flows into a softmax"):
        g.apply_masks(model, {fc1.id: np.eye(10, dtype=bool)[0]})
    conv2, = g.groups_of("conv2")
    with pytest.raises(ModelError, match="would lose all its channels"):
        g.apply_masks(model, {conv2.id: np.zeros(conv2.size, bool)})


def test_unknown_layer_is_a_clear_error():
    inputs = tf.keras.Input((4, 4, 2))
    x = lq.layers.QuantConv2D(3, 1, name="a", **BIN)(inputs)
    x = L.Lambda(lambda t: tf.reverse(t, axis=[-1]), name="flip")(x)
    model = tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(ModelError, match="layer 'flip' \\(Lambda\\) runs the TensorFlow op "
                                         "ReverseV2, which the channel graph does not understand.*"
                                         "Rewrite it with supported layers"):
        ChannelGraph(model)
    y = L.Permute((1, 3, 2), name="permute")(lq.layers.QuantConv2D(3, 1, **BIN)(inputs))
    with pytest.raises(ModelError, match="layer 'permute' \\(Permute\\) is a layer type the "
                                         "channel graph does not understand"):
        ChannelGraph(tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(y))))
    # on unprunable channels (the model input) an unknown layer is fine
    y = L.Lambda(lambda t: tf.reverse(t, axis=[-1]))(inputs)
    ChannelGraph(tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(y))))


def test_tf_op_lambda_reads_every_operand():
    inputs = tf.keras.Input((4, 4, 2))
    x = lq.layers.QuantConv2D(4, 1, name="a", **BIN)(inputs)
    y = lq.layers.QuantConv2D(4, 1, name="b", **BIN)(x)
    z = tf.nn.relu(x + y)                                 # TFOpLambdas; b is the 2nd operand
    model = tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(L.Lambda(lambda t: 0.5 * t)(z))))
    g = ChannelGraph(model)
    group, = g.groups_of("b")
    assert group.producers == ["a", "b"] and group.prunable
    masked = prune.prune_filters(model, "random", ratio=0.5)
    small = prune.strip_pruning(masked)
    assert small.get_layer("b").filters == 2
    x_in = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(small(x_in), masked(x_in), rtol=1e-5, atol=1e-5)


def test_split_and_channel_padding_are_fixed_concat_joins():
    inputs = tf.keras.Input((4, 4, 4))
    x = lq.layers.QuantConv2D(4, 1, name="stem", **BIN)(inputs)
    parts = L.Lambda(lambda t: tf.split(t, 2, axis=-1), name="split")(x)
    y = L.Lambda(lambda ts: tf.concat(ts, axis=-1), name="join")(
        [lq.layers.QuantConv2D(3, 1, name=f"g{i}", **BIN)(p) for i, p in enumerate(parts)])
    w = lq.layers.QuantConv2D(2, 1, name="w", **BIN)(y)
    z = L.Lambda(lambda ts: ts[0] + tf.pad(ts[1], [[0, 0]] * 3 + [[4, 0]]), name="merge")([y, w])
    g = ChannelGraph(tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(z))))
    assert "tf.split" in g.groups_of("stem")[0].fixed_reason
    assert [grp.prunable for grp in g.groups_of("g0")] == [False]      # added to padding
    assert sorted((grp.producers, grp.prunable) for grp in g.groups_of("g1")) == \
        [(["g1"], False), (["g1", "w"], True)]                          # 2 of 3 tied to w


def test_one_filter_feeding_two_concatenated_positions():
    inputs = tf.keras.Input((4, 4, 2))
    x = lq.layers.QuantConv2D(3, 1, name="x", **BIN)(inputs)
    y = lq.layers.QuantConv2D(6, 1, name="y", **BIN)(x)
    z = L.Add()([L.Concatenate()([x, x]), y])            # Bi-Real-style channel doubling
    model = tf.keras.Model(inputs, L.Dense(2)(L.Flatten()(lq.layers.QuantConv2D(4, 1, **BIN)(z))))
    group, = ChannelGraph(model).groups_of("y")
    np.testing.assert_array_equal(group.filters["x"], [0, 1, 2])
    np.testing.assert_array_equal(group.filters["y"], [[0, 3], [1, 4], [2, 5]])
    masked = prune.prune_filters(model, "random", ratio=0.5)
    small = prune.strip_pruning(masked)
    assert (small.get_layer("x").filters, small.get_layer("y").filters) == (1, 2)
    x_in = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(small(x_in), masked(x_in), rtol=1e-5, atol=1e-5)


def test_shared_layers_and_nested_models_are_refused():
    inputs = tf.keras.Input((4, 4, 2))
    conv = lq.layers.QuantConv2D(2, 1, name="shared", **BIN)
    model = tf.keras.Model(inputs, L.Flatten()(conv(conv(inputs))))
    with pytest.raises(ModelError, match="layer 'shared' is called 2 times; shared layers"):
        ChannelGraph(model)
    inner = models.build("mnist_bnn", (28, 28, 1), width=0.25)
    outer = tf.keras.Sequential([tf.keras.Input((28, 28, 1)), inner])
    with pytest.raises(ModelError, match="is a nested model"):
        ChannelGraph(outer)


def test_sequential_models_work():
    model = tf.keras.Sequential([
        tf.keras.Input((6, 6, 1)),
        lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="c1"),
        L.BatchNormalization(),
        lq.layers.QuantConv2D(6, 3, name="c2", **BIN),
        L.Flatten(),
        L.Dense(2),
    ])
    g = ChannelGraph(model)
    assert [x.producers for x in g.prunable_groups()] == [["c1"], ["c2"]]
    assert g.groups_of("c1")[0].consumers == ["c2"]
