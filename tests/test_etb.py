"""ETB (evolution from ternary to binary): quantizers, controller, lossless removal, residual
groups, deployment, bad input."""

import dataclasses

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import layer_facts, methods, models
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph
from bnnprune_tf.layer_facts import WeightDomain
from bnnprune_tf.ternary import TernaryActivation, TernaryWeight, ternary


# ------------------------------------------------------------------ quantizers
def test_ternary_forward_and_gradients():
    x = tf.constant([[-0.5, 0.1], [0.0, 0.7], [1.5, -0.05]])
    threshold = tf.Variable([0.2, 0.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = ternary(x, threshold, 0.1)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
    # channel 0: |x| >= 0.2 kept; channel 1 with threshold 0 is Larq's sign (+1 at 0)
    np.testing.assert_array_equal(y.numpy(), [[-1, 1], [0, 1], [1, -1]])
    dx = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(dx, [[1, 1], [1, 1], [0, 1]])   # STE, zero where |x| > 1
    d_threshold = tape.gradient(loss, threshold).numpy()
    # d/dt of sign(x) sigmoid((|x| - t)/T): -sign(x) s(1-s)/T summed over the channel
    s = tf.sigmoid((np.abs(x.numpy()) - threshold.numpy()) / 0.1).numpy()
    want = (-np.where(x.numpy() >= 0, 1, -1) * s * (1 - s) / 0.1).sum(axis=0)
    np.testing.assert_allclose(d_threshold, want, rtol=1e-5)


def test_quantizers_are_larq_quantizers_with_state():
    q = TernaryWeight(4, initial=0.5, temperature=0.3, speed=10.0)
    kernel = tf.random.stateless_uniform((3, 3, 2, 4), (1, 2), -1, 1)
    out = q(kernel).numpy()
    assert set(np.unique(out)) <= {-1.0, 0.0, 1.0} and (out == 0).any()
    np.testing.assert_allclose(q.threshold.numpy(), 0.05)          # stored as t / speed
    restored = lq.quantizers.get(lq.quantizers.serialize(q))
    assert isinstance(restored, TernaryWeight) and restored.get_config() == q.get_config()
    assert q.precision == 2 and layer_facts.is_elementwise(q)
    conv = lq.layers.QuantConv2D(4, 3, kernel_quantizer=q, input_quantizer=TernaryActivation(2))
    conv(tf.ones((1, 5, 5, 2)))
    assert layer_facts.weight_domain(conv) is WeightDomain.TERNARY
    assert layer_facts.kernel_precision(conv) == 2
    assert not layer_facts.is_binary_conv(conv)
    trainable = {v.name.split("/")[-1] for v in conv.trainable_weights}
    assert {"kernel:0", "threshold:0"} <= trainable
    # decided channels: binary is exactly Larq's sign, zero is exactly 0
    q.decide(np.array([True, False, True, False]))
    out = q(kernel).numpy()
    sign = np.where(kernel.numpy() >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(out[..., [0, 2]], sign[..., [0, 2]])
    assert not out[..., [1, 3]].any()
    with pytest.raises(ValueError, match="has 4 channels"):
        q(tf.ones((3, 3, 2, 5)))


# ------------------------------------------------------------------ training
def _subset(ds, n):
    return dataclasses.replace(ds, x_train=ds.x_train[:n], y_train=ds.y_train[:n])


def _etb_fit(model, data, epochs=4, **params):
    """ETB in a user's own compile/fit (no bnnprune training helper)."""
    method = methods.get("etb")(**{"control_every": 2, **params})
    evolving = method.prepare(model)
    evolving.compile(tf.keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                     ["accuracy"])
    x, y = data.arrays("train")
    tf.keras.utils.set_random_seed(0)
    evolving.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=method.callbacks())
    return method, evolving, method.finalize(evolving)


@pytest.fixture(scope="module")
def trained(mnist_small, tmp_path_factory):
    model = models.build("mnist_bnn", mnist_small.input_shape, 10, width=0.5)
    log_dir = tmp_path_factory.mktemp("tensorboard")
    return (model, *_etb_fit(model, mnist_small, ratio=0.3, log_dir=str(log_dir)), log_dir)


def test_controller_reaches_the_target_ratio(trained):
    from bnnprune_tf.reporting import render_png

    model, method, evolving, result, log_dir = trained
    m = result.metrics
    assert abs(m["binary_params_reduction"] - 0.3) <= 0.02, m["binary_params_reduction"]
    assert m["binary_params_dense"] == 9 * (16 * 32 + 32 * 64 + 64 * 10)
    assert 0 < m["binary_params"] < m["binary_params_dense"]
    steps, setpoints, measured, pressure = zip(*method.controller.trace)
    assert setpoints[-1] == pytest.approx(0.3)
    # integral feedback: the pressure rises while the measured share is below the setpoint
    below = [i for i in range(1, len(steps)) if measured[i] < setpoints[i] - 0.05]
    assert below and all(pressure[i] > pressure[i - 1] for i in below)
    # the histogram per epoch (and its figure) ends bimodal: every filter all 0 or all 1
    last = m["zero_fraction_histograms"][-1]
    assert sum(last[1:-1]) == 0 and last[0] > 0 and last[-1] > 0
    assert len(m["zero_fraction_histograms"]) == 4            # one per epoch
    assert render_png(result.figures["etb_zero_fraction"]).startswith(b"\x89PNG")
    assert render_png(result.figures["etb_controller"]).startswith(b"\x89PNG")
    assert any("events" in p.name for p in log_dir.iterdir())  # TensorBoard histograms
    assert len(model.layers[1].get_weights()) == 1          # the caller's model untouched


def test_removal_is_lossless_and_deploys(trained, mnist_small):
    from converters import lce, tflm

    _, method, evolving, result, _ = trained
    x = mnist_small.arrays("test", limit=64)[0]
    want = evolving.predict(x, verbose=0)
    got = result.model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    kept = result.tables["kept filters"]
    assert any(r["kept"] < r["filters"] for r in kept.values())
    for layer in result.model.layers:           # plain Larq sign quantizers, no zeros left
        if layer_facts.is_binary_conv(layer):
            assert layer_facts.weight_domain(layer) is WeightDomain.BINARY
            q = np.asarray(layer_facts.quantized_kernel(layer))
            assert set(np.unique(q)) == {-1.0, 1.0}
    flatbuffer = lce.convert(result.model)
    info = lce.inspect(flatbuffer)
    binary_convs = [l for l in result.model.layers if layer_facts.is_binary_conv(l)]
    assert info.ops.get("LceBconv2d", 0) == len(binary_convs)
    assert lce.verify(result.model, flatbuffer, x).argmax_agreement == 1.0
    report = tflm.verify_tflm(result.model, tflm.to_tflm(result.model, calibration=x), x[:16])
    assert report["bit_exact"] and report["integer_argmax_agreement"] == 1.0


def test_max_layer_ratio_keeps_every_group_above_its_floor(mnist_small):
    """At a high target the uncapped controller empties a group down to a few channels;
    ``max_layer_ratio=0.4`` keeps 60 % of every group and still meets the target."""
    model = models.build("mnist_bnn", mnist_small.input_shape, 10, width=0.5, seed=0)
    data = _subset(mnist_small, 1024)
    widths = {}
    for cap in (1.0, 0.4):
        _, _, result = _etb_fit(model, data, epochs=3, ratio=0.55, max_layer_ratio=cap)
        assert abs(result.metrics["binary_params_reduction"] - 0.55) <= 0.02, cap
        widths[cap] = {layer: (r["kept"], r["filters"])
                       for layer, r in result.tables["kept filters"].items()}
    assert any(k < 0.6 * n for k, n in widths[1.0].values()), widths
    assert all(k >= 0.6 * n for k, n in widths[0.4].values()), widths


def test_residual_channels_are_decided_together(mnist_small):
    model = models.build("resnet18", mnist_small.input_shape, 10, width=0.125,
                         stages=(1, 1, 1, 1))
    small_data = _subset(mnist_small, 256)
    method, evolving, result = _etb_fit(model, small_data, epochs=2, ratio=0.3)
    graph = ChannelGraph(evolving)
    keep = graph.keep_from_masks(result.masked)
    tied = [g for g in method.plan.groups if len(g.producers) > 1]
    assert tied, "the stages' adds tie producers"
    for g in tied:          # every producer of a tied group keeps the same channels
        widths = {result.model.get_layer(p).filters if hasattr(result.model.get_layer(p),
                  "filters") else None for p in g.producers}
        assert widths == {int(keep[g.id].sum())}
    x = small_data.arrays("test", limit=32)[0]
    np.testing.assert_allclose(result.model.predict(x, verbose=0),
                               evolving.predict(x, verbose=0), rtol=1e-5, atol=1e-7)
    assert abs(result.metrics["binary_params_reduction"] - 0.3) <= 0.02


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_range_is_an_error(ratio):
    with pytest.raises(ModelError, match="ratio"):
        methods.get("etb")(ratio=ratio)


def test_nothing_prunable_is_an_error_before_training():
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3)(inputs)          # float: no ternary thresholds
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(3, activation="softmax")(x)
    method = methods.get("etb")(ratio=0.3)
    with pytest.raises(ModelError, match="nothing to prune"):
        method.prepare(tf.keras.Model(inputs, outputs))


def test_recipe_prune_stage_runs_etb(tmp_path):
    """The method on the interface, from a recipe (``Method.run`` inside the prune stage)."""
    import json

    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    recipe = parse_recipe({
        "name": "etb", "seed": 0, "data": {"name": "mnist5k", "limit": 300, "batch_size": 64},
        "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", {"prune": {"method": "etb", "ratio": 0.2, "epochs": 2,
                                       "control_every": 2}}, "report"]})
    run_dir = run_recipe(recipe, tmp_path, log=lambda m: None)
    m = json.loads((run_dir / "stages" / "01-prune.json").read_text())["metrics"]
    assert len(m["history"]) == 2
    assert abs(m["binary_params_reduction"] - 0.2) <= 0.02
    assert m["check"]["argmax_agreement"] == 1.0 and m["check"]["max_abs_diff"] < 1e-5
    assert (run_dir / "etb_zero_fraction.png").exists()
    assert "ETB: filter zero fraction per epoch" in (run_dir / "report.md").read_text()


def test_recipe_validates():
    from pipelines.recipe import load_recipe

    r = load_recipe("pipelines/fashion_mnist_etb.yaml")
    prune_stage = next(s for s in r.stages if s.name == "prune")
    assert prune_stage.params["method"] == "etb" and prune_stage.params["ratio"] == 0.46
