"""SBNN (methods.md section 4): the {alpha, beta} domain, the expected-connections objective
and every check of section 4.7, the closed-form start, the method in a user's own fit."""

import glob

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bnnprune_tf import layer_facts, methods, models, sbnn
from bnnprune_tf.errors import ModelError
from bnnprune_tf.methods.sbnn import ExpectedConnectionsModel, penalty


def tiny(seed=0):
    return models.build("mnist_bnn", (28, 28, 1), 10, width=0.25, seed=seed)


def signs(shape, seed=0):
    return np.where(np.random.RandomState(seed).rand(*shape) < 0.5, -1.0, 1.0).astype("float32")


def test_plain_start_is_the_sign_bnn_and_declares_the_affine_domain():
    model = tiny()
    converted = sbnn.to_sbnn(model)
    assert [l.name for l in sbnn.sbnn_layers(converted)] == ["conv2", "conv3"]   # not fc1
    layer = converted.get_layer("conv2")
    assert (float(layer.tau), float(layer.phi)) == (1.0, 0.0)
    assert layer_facts.weight_domain(layer) is layer_facts.WeightDomain.AFFINE
    x = np.random.RandomState(0).uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))
    # EC = 0.5 with gamma = 0 adds nothing to the loss, whatever p_hat is
    term, lam = penalty(tf.constant(2.3), tf.constant(0.7), ec=0.5, gamma=0.0)
    assert float(term) == 0.0 and float(lam) == 0.0


def test_conv_identity_sparse_form():
    rng = np.random.RandomState(1)
    layer = sbnn.SBNNConv2D(6, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                            use_bias=False)
    x = signs((2, 7, 7, 5))
    layer(x)
    layer.tau.assign(0.37)
    layer.phi.assign(-0.81)
    layer_facts.latent_kernel(layer).assign(rng.uniform(-1, 1, (3, 3, 5, 6)))
    b = sbnn.connections(layer).astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)

    def conv(k):
        return tf.nn.conv2d(padded, k, 1, "VALID").numpy()

    sparse = 2 * 0.37 * conv(b) + (-0.81 - 0.37) * conv(np.ones((3, 3, 5, 1), "float32"))
    np.testing.assert_allclose(layer(x).numpy(), sparse, rtol=1e-5, atol=1e-4)
    alpha, beta = layer.alpha_beta()
    np.testing.assert_allclose(np.unique(layer_facts.quantized_kernel(layer)), [alpha, beta],
                               rtol=1e-6)


def test_p_hat_counts_connections_with_the_straight_through_gradient():
    model = sbnn.to_sbnn(tiny(1))
    layers = sbnn.sbnn_layers(model)
    with tf.GradientTape() as tape:
        p_hat = sbnn.expected_connections(layers)
    grads = tape.gradient(p_hat, [layer_facts.latent_kernel(l) for l in layers])
    n = sum(int(np.prod(l.kernel.shape)) for l in layers)
    counted = sum(int((np.asarray(layer_facts.latent_kernel(l)) >= 0).sum()) for l in layers)
    assert float(p_hat) == pytest.approx(counted / n, abs=1e-7)
    for g in grads:
        np.testing.assert_allclose(g.numpy(), 0.5 / n, rtol=1e-5)


def test_penalty_is_zero_with_zero_gradient_at_or_below_the_target():
    w = tf.Variable(np.array([-0.3, -0.2, 0.1, -0.5], "float32"))   # p_hat = 0.25
    with tf.GradientTape() as tape:
        p_hat = tf.reduce_mean(tf.stop_gradient(tf.cast(w >= 0, tf.float32) - 0.5 * w) + 0.5 * w)
        term, lam = penalty(tf.constant(1.7), p_hat, ec=0.25, gamma=0.07)
    assert float(term) == 0.0 and float(lam) == 0.0
    assert np.all(tape.gradient(term, w).numpy() == 0.0)


def test_penalty_above_the_target_is_gamma_share_of_task_loss_with_constant_lambda():
    w = tf.Variable(np.array([0.3, 0.2, 0.1, -0.5], "float32"))    # p_hat = 0.75
    task = tf.constant(1.7)
    with tf.GradientTape() as tape:
        p_hat = tf.reduce_mean(tf.stop_gradient(tf.cast(w >= 0, tf.float32) - 0.5 * w) + 0.5 * w)
        term, lam = penalty(task, p_hat, ec=0.1, gamma=0.07)
    assert float(term) == pytest.approx(0.07 / 0.93 * 1.7, rel=1e-6)
    assert float(lam) == pytest.approx(0.07 * 1.7 / (0.65 * 0.93), rel=1e-6)
    np.testing.assert_allclose(tape.gradient(term, w).numpy(), float(lam) * 0.5 / 4, rtol=1e-6)


def test_params_are_checked_before_any_work():
    cls = methods.get("sbnn")
    for bad in ({"ec": 0.0}, {"ec": 0.6}, {"ec": 0.05, "gamma": 1.0}, {"ec": 0.05, "gamma": -0.1},
                {"ec": 0.07}):
        with pytest.raises(ModelError, match="ec|gamma"):
            cls(**bad)
    assert cls(ec=0.02).params.gamma == 0.08 and cls(ec=0.07, gamma=0.1).params.gamma == 0.1
    inputs = tf.keras.Input((8, 8, 1))
    x = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", use_bias=False)(inputs)
    x = lq.layers.QuantConv2D(2, 6, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              use_bias=False)(x)
    no_binary_conv = tf.keras.Model(inputs, tf.keras.layers.Flatten()(x))
    with pytest.raises(ModelError, match="no binary conv"):
        cls(ec=0.05).prepare(no_binary_conv)
    with pytest.raises(ModelError, match="'fc1'"):
        cls(ec=0.05, layers=["conv2", "fc1"]).prepare(tiny())


def test_saved_and_cloned_layers_keep_tau_phi():
    model = sbnn.to_sbnn(tiny(2))
    layer = model.get_layer("conv3")
    layer.tau.assign(0.6)
    layer.phi.assign(0.2)
    x = np.random.RandomState(3).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
    config = layer.get_config()
    assert "kernel_quantizer" not in config and config["clip_value"] == 1.5
    copy = models.copy_model(model)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))
    path = f"{pytest.importorskip('tempfile').mkdtemp()}/m.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert float(loaded.get_layer("conv3").phi) == pytest.approx(0.2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_closed_form_is_least_squares_and_starts_at_the_target_share():
    assert sbnn.closed_form(np.array([-1.0, -0.5, 0.5, 2.0])) == (1.0, 0.25)
    rng = np.random.RandomState(4)
    w = rng.normal(0.1, 1.0, 500)
    tau, phi = sbnn.closed_form(w)
    q = np.where(w >= 0, phi + tau, phi - tau)
    for dt, dp in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        other = np.where(w >= 0, phi + dp + tau + dt, phi + dp - tau - dt)
        assert ((w - q) ** 2).sum() < ((w - other) ** 2).sum()
    model = tiny(3)
    started = sbnn.to_sbnn(model, start="closed_form", ec=0.1)
    for layer in sbnn.sbnn_layers(started):
        latent = np.asarray(layer_facts.latent_kernel(model.get_layer(layer.name)))
        assert sbnn.connections(layer).mean() == pytest.approx(0.1, abs=0.002)
        want = sbnn.closed_form(latent / np.abs(latent).mean(),
                                latent >= np.quantile(latent, 0.9))
        assert (float(layer.tau), float(layer.phi)) == pytest.approx(want, rel=1e-5)


def test_method_in_a_users_fit_drives_p_hat_to_ec_clamps_and_logs(mnist_small, tmp_path):
    method = methods.get("sbnn")(ec=0.25, gamma=0.5, log_dir=str(tmp_path / "tb"))
    model = tiny(4)
    prepared = method.prepare(model)
    assert isinstance(prepared, ExpectedConnectionsModel) and not sbnn.sbnn_layers(model)
    x, y = mnist_small.arrays("train", limit=512)
    prepared.compile(tf.keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy",
                     ["accuracy"])
    history = prepared.fit(x, y, batch_size=64, epochs=6, verbose=0,
                           callbacks=method.callbacks()).history
    assert {"p_hat", "ec", "sbnn_lambda", "sbnn_penalty"} <= set(history)
    p = [row["p_hat"] for row in method.log.rows]
    assert p[0] < 0.5 and p[-1] <= 0.25 + 0.01, p
    for layer in sbnn.sbnn_layers(prepared):
        latent = np.asarray(layer_facts.latent_kernel(layer))
        assert np.abs(latent).max() <= 1.5
        np.testing.assert_array_equal(layer.kernel_constraint(tf.constant([3.0, -2.0, 0.4])),
                                      np.float32([1.5, -1.5, 0.4]))   # after every step
    result = method.finalize(prepared)
    assert result.metrics["reached"] and result.metrics["p_hat"] == pytest.approx(p[-1])
    assert set(result.tables["connections per layer"]) == {"conv2", "conv3"}
    xt = mnist_small.arrays("test", limit=32)[0]
    np.testing.assert_array_equal(result.model.predict(xt, verbose=0),
                                  prepared.predict(xt, verbose=0))
    tags = set()
    for path in glob.glob(str(tmp_path / "tb" / "train" / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {v.tag for v in event.summary.value}
    assert {"epoch_p_hat", "epoch_sbnn_lambda"} <= tags


def test_sbnn_in_a_recipe_end_to_end(tmp_path):
    import json

    from pipelines.recipe import parse_recipe
    from pipelines.runner import run_recipe

    recipe = parse_recipe({
        "name": "sbnn", "seed": 0, "data": {"name": "mnist5k", "limit": 300},
        "model": {"name": "mnist_bnn", "width": 0.25}, "training": {"epochs": 1},
        "stages": ["train", {"prune": {"method": "sbnn", "ec": 0.1, "start": "closed_form",
                                       "epochs": 1}},
                   {"convert": {"split": "val"}}, "report"]})
    run_dir = run_recipe(recipe, tmp_path, log=lambda m: None)
    pruned = json.loads((run_dir / "stages" / "01-prune.json").read_text())["metrics"]
    assert pruned["p_hat"] <= 0.11 and pruned["check"]["argmax_agreement"] == 1.0
    converted = json.loads((run_dir / "stages" / "02-convert.json").read_text())["metrics"]
    assert converted["binary_convs"]["LceBconv2d"] == converted["binary_convs"]["expected"] == 3
    assert converted["verify"]["argmax_agreement"] == 1.0
    assert "connections per layer" in (run_dir / "report.md").read_text()
