import numpy as np
import pytest

from bnnprune_tf import masks, models, select
from bnnprune_tf.errors import ModelError
from bnnprune_tf.graph import ChannelGraph


@pytest.fixture(scope="module")
def vgg():
    model = masks.prunable(models.build("vgg_small", (32, 32, 3), width=0.5))
    return model, ChannelGraph(model)


@pytest.mark.parametrize("size, target, multiple, expected", [
    (64, 40.0, 1, 40), (64, 40.0, 32, 32), (64, 40.0, 8, 40), (64, 37.9, 8, 32),
    (64, 10.0, 32, 32), (20, 5.0, 32, 20), (64, 0.2, 1, 1), (64, 64.0, 32, 64)])
def test_kept_count_rounds_down_to_a_multiple(size, target, multiple, expected):
    assert select.kept_count(size, target, multiple) == expected


def test_l1_scores_are_filter_norms(vgg):
    model, _ = vgg
    layer = model.get_layer("conv2")
    kernel = layer.latent_kernel.numpy()
    np.testing.assert_allclose(select.l1_filter_norm(layer),
                               np.abs(kernel).sum(axis=(0, 1, 2)), rtol=1e-6)


def test_select_keeps_the_best_and_breaks_ties_by_index(vgg):
    _, graph = vgg
    group, = graph.groups_of("conv2")
    scores = {group.id: np.r_[np.arange(group.size - 4), [0, 0, 0, 0]].astype(float)}
    keep = select.select(graph, scores, widths={"conv2": group.size - 2})
    assert keep[group.id].sum() == group.size - 2
    # five channels tie at score 0 (index 0 and the last four): the lower indices stay
    assert np.flatnonzero(~keep[group.id]).tolist() == [group.size - 2, group.size - 1]


def test_global_ratio_with_lce_rounding(vgg):
    model, graph = vgg
    scores = select.group_scores(graph, model, select.l1_filter_norm)
    keep = select.select(graph, scores, ratio=0.4, round_to="lce")
    sizes = {tuple(g.producers): int(keep[g.id].sum()) for g in graph.prunable_groups()}
    # conv_first: 64 filters read by a binary conv -> multiple of 32; 38.4 -> 32
    assert sizes[("conv_first",)] == 32
    # conv6 (256) is read by fc1 (binary): 153.6 -> 128
    assert sizes[("conv6",)] == 128
    assert all(v % 32 == 0 for v in sizes.values())
    exact = select.select(graph, scores, ratio=0.4)
    assert int(exact[graph.groups_of("conv2")[0].id].sum()) == 38


def test_targets_are_validated(vgg):
    model, graph = vgg
    scores = select.group_scores(graph, model, select.l1_filter_norm)
    with pytest.raises(ModelError, match="give exactly one target"):
        select.select(graph, scores, ratio=0.5, widths={"conv2": 3})
    with pytest.raises(ModelError, match="ratio must be in \\[0, 1\\), got 1.0"):
        select.select(graph, scores, ratio=1.0)
    with pytest.raises(ModelError, match="no conv/dense layer named 'conv99'"):
        select.select(graph, scores, ratios={"conv99": 0.5})
    with pytest.raises(ModelError, match="layer 'fc1' cannot be pruned"):
        select.select(graph, scores, ratios={"fc1": 0.5})
    with pytest.raises(ModelError, match="width for 'conv2' must be in \\[1, 64\\], got 0"):
        select.select(graph, scores, widths={"conv2": 0})
    with pytest.raises(ModelError, match="unknown criterion 'l2'"):
        select.get_criterion("l2")


def test_random_criterion_is_seeded(vgg):
    model, _ = vgg
    layer = model.get_layer("conv3")
    a = select.random_scores(3)(layer)
    np.testing.assert_array_equal(a, select.random_scores(3)(layer))
    assert not np.array_equal(a, select.random_scores(4)(layer))
