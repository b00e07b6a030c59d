"""benchmarks.protocol: the paired statistics every method benchmark reports."""

import math

import numpy as np
import pytest

from benchmarks import protocol


def test_mcnemar_is_the_exact_two_sided_binomial_test():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1], bool)
    test = protocol.mcnemar(a, b)
    assert (test["a_only"], test["b_only"]) == (6, 1)
    assert test["p"] == pytest.approx(2 * (1 + 7) / 2 ** 7)          # P(X <= 1), n = 7
    assert protocol.mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p": 1.0}


def _row(arm, seed, correct, macs):
    n = protocol.SETUP["test_images"]
    bits = np.zeros(n, bool)
    bits[:correct] = True
    return {"method": arm, "arm": arm, "config": {}, "seed": seed, "epochs_total": 5,
            "binary_macs": macs, "binary_params": macs // 10, "test_accuracy": correct / n,
            "test_correct": protocol._pack(bits)}


def test_summary_pairs_each_arm_with_the_control_of_its_seed():
    rows = [_row("dense", 0, 9000, 1000), _row("dense", 1, 9100, 1000),
            _row("ours", 0, 8990, 700), _row("ours", 1, 9060, 700),
            _row("rand", 0, 8500, 700), _row("rand", 1, 8600, 700)]
    by_arm = {s["arm"]: s for s in protocol.summarize(rows, "dense", {"ours": ["rand"]})}
    ours = by_arm["ours"]
    assert ours["binary_macs_reduction"] == pytest.approx(0.3)
    assert ours["test_loss_points"] == pytest.approx((0.1 + 0.4) / 2)
    assert ours["test_loss_points_sd"] == pytest.approx(math.sqrt(2) * 0.15)
    assert ours["beats"] == ["rand"] and ours["tests"]["rand"]["a_only"] == 490 + 460
    assert ours["vs_control"]["b_only"] == 10 + 40
    assert by_arm["dense"]["test_loss_points"] == 0.0
    assert protocol.unpack(rows[0]["test_correct"], 10000).sum() == 9000
