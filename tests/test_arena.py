"""benchmarks/arena.py at a tiny scale (the MNIST BNN on 600 images, 1 + 2 epochs): every
arm runs through the method interface, matched baselines get their source's cost and
epochs, every final model converts with LCE and runs bit-exact in the C runtime on a
Cortex-M4 under QEMU, cells are cached and a recomputed cell is identical."""

import json
import shutil

import pytest

from benchmarks import arena, common, protocol
from bnnprune_tf import data, files, models

from conftest import require_tools

ARMS = ["latent_weight_w46", "random_weight_w46", "uniform_r30", "wff_i1", "l1_wff_i1"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm")
    monkeypatch.setattr(protocol, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(protocol, "SETUP", {**protocol.SETUP, "data": "mnist5k",
                                            "model": "mnist_bnn", "test_images": 100})
    monkeypatch.setattr(protocol, "dataset",
                        lambda seed: data.load("mnist5k", seed=seed, limit=600))
    monkeypatch.setattr(arena, "RUNS", 3)
    monkeypatch.setattr(arena, "VERIFY", 100)
    monkeypatch.setattr(arena, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return tmp_path


def test_arena_runs_every_arm_through_the_interface_and_deploys(tiny):
    arena.main(["--arms", *ARMS, "--seeds", "0", "--epochs", "1", "--lr", "0.01"])
    result = json.loads((tiny / "results" / "arena.json").read_text())
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == {*ARMS, "dense_k3", "dense_scratch", "dense_wffm_k3"}
    latent, rand = rows["latent_weight_w46"], rows["random_weight_w46"]
    assert rand["config"]["ratios"] == latent["ratios"]              # matched: equal cost
    # every arm and control trains E + K = 1 + 3 epochs
    assert {r["epochs_total"] for r in rows.values()} == {4}
    assert rand["binary_params"] == latent["binary_params"] < rows["dense_k3"]["binary_params"]
    wff, l1 = rows["wff_i1"], rows["l1_wff_i1"]      # WFF's measuring epoch is a prelude
    assert wff["control"] == l1["control"] == "dense_wffm_k3"          # that all three train
    assert l1["config"]["widths"] == wff["widths"] and l1["config"]["epochs"] == 2
    assert l1["binary_macs"] == wff["binary_macs"]
    assert rows["uniform_r30"]["widths"]                              # really narrower
    assert rows["uniform_r30"]["config"]["learning_rate"] == 0.01     # as dense_scratch
    for name, row in rows.items():
        assert row["bit_exact"] is True and row["m4_instructions"] > 0, name
        if "weight" in name:      # zero binary weights: the C runtime runs them, LCE cannot
            assert row["lce"].startswith("refused: layer") and "model_bytes" not in row, name
            continue
        assert row["lce_argmax_agreement"] == 1.0, name
        assert row["model_bytes"] == len(
            (tiny / "cache" / "cells" / row["flatbuffer"]).read_bytes()), name
        if name in ARMS:
            assert set(row["lce_time_ratio"]) == set(arena.KERNELS), name
    summary = {s["arm"]: s for s in result["summary"]}
    assert summary["latent_weight_w46"]["control"] == "dense_k3"
    assert summary["uniform_r30"]["control"] == "dense_scratch"
    assert "random_weight_w46" in {*summary["latent_weight_w46"]["beats"],
                                   *summary["latent_weight_w46"]["ties"],
                                   *summary["latent_weight_w46"]["loses"]}
    for stem in ("macs", "m4", "bytes"):
        assert (tiny / "results" / f"arena_{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| latent_weight_w46 | w46 | dense_k3 | 1 | 4 |" in \
        (tiny / "results" / "arena.md").read_text()

    # a rerun reads every cell from the cache: no file is written again
    cache = {p: p.stat().st_mtime_ns for p in (tiny / "cache").rglob("*")}
    arena.main(["--arms", *ARMS, "--seeds", "0", "--epochs", "1", "--lr", "0.01"])
    assert json.loads((tiny / "results" / "arena.json").read_text())["rows"] == result["rows"]
    assert {p: p.stat().st_mtime_ns for p in (tiny / "cache").rglob("*")} == cache
    # --cached-only reports the cached cells and lists the others, training nothing
    arena.main(["--arms", *ARMS, "random_r30", "--seeds", "0", "--epochs", "1", "--lr",
                "0.01", "--cached-only"])
    assert json.loads((tiny / "results" / "arena.json").read_text())["rows"] == result["rows"]
    assert "Not run yet (1): random_r30 seed 0." in \
        (tiny / "results" / "arena.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in (tiny / "cache").rglob("*")} == cache
    # --retime times the cached flatbuffers again and stores the ratios in the cells
    arena.main(["--arms", *ARMS, "--seeds", "0", "--epochs", "1", "--lr", "0.01",
                "--retime"])
    retimed = json.loads((tiny / "results" / "arena.json").read_text())["rows"]
    timed = [r for r in retimed if "lce_time_ratio" in r]
    assert {r["arm"] for r in timed} == {a for a in ARMS if "weight" not in a}
    for old, new in zip(result["rows"], retimed):
        assert {**old, "lce_time_ratio": None} == {**new, "lce_time_ratio": None}
    for row in timed:
        cell = tiny / "cache" / "cells" / row["flatbuffer"].replace(".tflite", ".json")
        assert json.loads(cell.read_text()) == row
        assert cell.stat().st_mtime_ns > cache[cell]
    # a recomputed cell is identical to the cached one (timing aside)
    found = arena.recheck("l1_wff_i1", arena.Arena(1, 0.01, log=lambda _: None))
    assert (found["identical"], found["differ"], found["flatbuffer_compared"],
            found["controls_reproduced"]) == (True, [], True, [])

    # a fresh machine: --restore puts the committed rows back, without flatbuffers
    results = tiny / "results" / "arena.json"
    committed = json.loads(results.read_text())
    for row in committed["rows"]:                          # a row of an arm changed since
        if row["arm"] == "l1_wff_i1":
            row["params"] = {**row["params"], "round_to": 16}
    files.write_json(results, committed)
    shutil.rmtree(tiny / "cache" / "cells")
    arena.main(["--restore"])
    assert sorted(p.suffix for p in (tiny / "cache" / "cells").iterdir()) == \
        [".json"] * (len(retimed) - 1)
    cells = {p: p.read_text() for p in (tiny / "cache" / "cells").iterdir()}
    arena.main(["--restore"])                      # again: the cells agree, nothing changes
    assert {p: p.read_text() for p in (tiny / "cache" / "cells").iterdir()} == cells
    arena.main(["--arms", *ARMS, "--seeds", "0", "--epochs", "1", "--lr", "0.01",
                "--cached-only"])
    restored = json.loads(results.read_text())
    assert restored["rows"] == [r for r in retimed if r["arm"] != "l1_wff_i1"]
    with pytest.raises(FileNotFoundError, match="restored from results.*--recheck"):
        arena.retime(restored["rows"])
    # an arm recomputed against a restored control recomputes that control, which must
    # reproduce its row; a control that does not is an error and stays unverified
    bench = arena.Arena(1, 0.01, log=lambda _: None)
    control = protocol.cell_path(bench.control_key(0, None))
    honest = json.loads(control.read_text())
    files.write_json(control, {**honest, "val_correct": honest["val_correct"] + 1})
    with pytest.raises(ValueError, match="results differ in val_correct"):
        arena.main(["--restore"])
    with pytest.raises(arena.NotReproduced, match="dense_scratch seed 0, restored from "
                                                  "results, computes differently here: "
                                                  "val_correct"):
        arena.recheck("uniform_r30", bench)
    assert not (tiny / "cache" / "cells" / honest["flatbuffer"]).exists()
    files.write_json(control, honest)
    arena.main(["--recheck", "uniform_r30", "--epochs", "1", "--lr", "0.01"])
    found = json.loads((tiny / "results" / "arena_recheck.json").read_text())["rows"]
    assert [(r["arm"], r["identical"], r["differ"], r["flatbuffer_compared"],
             r["controls_reproduced"]) for r in found] == [
        ("uniform_r30", True, [], False, ["dense_scratch seed 0"])]
    assert found[0]["fields_compared"] > 30
    assert (tiny / "cache" / "cells" / honest["flatbuffer"]).exists()


def test_etb_benchmark_runs_resnet18_with_tied_channels(tiny, monkeypatch):
    """``benchmarks/etb.py``'s resnet18 arms: arena cells keyed by the model; ETB's widths
    keep the channels that residual adds tie equal; L1 and random prune the checkpoint to
    exactly those widths; LCE runs every model, the C runtime (chains only) refuses. For
    time, resnet18 has one block pair per stage (tracing its training graphs dominates)
    and the random arm is left out: it runs as the L1 arm does, with other scores."""
    from benchmarks import etb

    monkeypatch.setattr(protocol, "SETUP", {**protocol.SETUP, "width": 0.125})
    monkeypatch.setitem(models._BUILDERS, "resnet18",
                        lambda *args: models.resnet18(*args, stages=(1, 1, 1, 1)))
    monkeypatch.setitem(etb.MODELS, "resnet18",
                        ("resnet18", etb.RESNET_ARMS, ("etb_r30", "l1_etb_r30")))
    etb.main(["--models", "resnet18", "--seeds", "0", "--epochs", "1", "--lr", "0.01"])
    result = json.loads((tiny / "results" / "etb.json").read_text())
    assert {r["model"] for r in result["rows"] + result["summary"]} == {"resnet18"}
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == {"etb_r30", "l1_etb_r30", "dense_scratch", "dense_k3"}
    assert all(r["setup"]["model"] == "resnet18" for r in rows.values() if "setup" in r)
    widths = rows["etb_r30"]["widths"]
    assert widths, "ETB removed no channel"
    for stage in ("s1", "s2", "s3", "s4"):       # a stage's adds tie all its producers
        tied = {w for layer, w in widths.items() if layer.startswith(stage)}
        assert len(tied) <= 1, (stage, widths)
    assert rows["l1_etb_r30"]["config"]["widths"] == widths
    assert rows["l1_etb_r30"]["binary_params"] == rows["etb_r30"]["binary_params"]
    for name, row in rows.items():
        assert row["lce_argmax_agreement"] == 1.0, name
        assert row["c_runtime"].startswith("refused: "), name
    summary = {s["arm"]: s for s in result["summary"]}
    assert abs(summary["etb_r30"]["binary_params_reduction"] - 0.3) <= 0.02
    assert {*summary["etb_r30"]["beats"], *summary["etb_r30"]["ties"],
            *summary["etb_r30"]["loses"]} == {"l1_etb_r30"}
    assert "## resnet18 width 0.125" in (tiny / "results" / "etb.md").read_text()
    # --retime times the cached flatbuffers again; nothing else in a row changes
    etb.main(["--models", "resnet18", "--seeds", "0", "--epochs", "1", "--lr", "0.01",
              "--cached-only", "--retime"])
    retimed = json.loads((tiny / "results" / "etb.json").read_text())["rows"]
    assert [{**r, "lce_time_ratio": None} for r in retimed] == \
        [{**r, "lce_time_ratio": None} for r in result["rows"]]
    assert {r["arm"] for r in retimed if "lce_time_ratio" in r} == \
        {"etb_r30", "l1_etb_r30"}
    # a fresh machine: the committed rows (which name their model) restore the cells
    shutil.rmtree(tiny / "cache" / "cells")
    etb.main(["--models", "resnet18", "--restore"])
    etb.main(["--models", "resnet18", "--seeds", "0", "--epochs", "1", "--lr", "0.01",
              "--cached-only"])
    assert json.loads((tiny / "results" / "etb.json").read_text())["rows"] == retimed


def test_cbnn_benchmark_reports_slices_weight_bytes_and_the_validation_choice(tiny,
                                                                                monkeypatch):
    """``benchmarks/cbnn.py``: a CBNN arm is an arena cell that keeps its slices and
    sensitivity analysis; its flatbuffer has no float conv (the control's has one);
    weight bytes are the flatbuffer's constants; the validation choice follows the
    budget on integer counts; the sensitivity table and PNG are written."""
    from benchmarks import cbnn
    from converters import lce

    arm = arena.Arm("cbnn_w50_s4", "cbnn", {"widths": [0.5], "slices": [4, 5, 6, 7],
                                           "base_epochs": 1}, "scratch", "r50")
    monkeypatch.setattr(cbnn, "ARMS", (arm,))
    cbnn.main(["--seeds", "0", "--epochs", "1", "--lr", "0.01", "--budget", "0.5"])
    result = json.loads((tiny / "results" / "cbnn.json").read_text())
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == {"cbnn_w50_s4", "dense_scratch"}
    ours, control = rows["cbnn_w50_s4"], rows["dense_scratch"]
    assert ours["slices"] == [4, 5, 6, 7] and ours["epochs_total"] == control["epochs_total"]
    assert (ours["float_conv2d"], control["float_conv2d"]) == (0, 1)
    assert ours["bit_exact"] is True and ours["lce_argmax_agreement"] == 1.0
    for row in (ours, control):
        info = lce.inspect((tiny / "cache" / "cells" / row["flatbuffer"]).read_bytes())
        assert row["weight_bytes"] == sum(t["constant_bytes"] for t in info.tensors)
    summary = {s["arm"]: s for s in result["summary"]}
    assert summary["cbnn_w50_s4"]["weight_bytes_ratio"] == pytest.approx(
        control["weight_bytes"] / ours["weight_bytes"])
    assert summary["cbnn_w50_s4"]["weight_bytes_ratio"] > 1
    val_images = len(protocol.dataset(0).y_val)
    within = control["val_correct"] - ours["val_correct"] <= val_images // 2
    assert result["chosen"] == ("cbnn_w50_s4" if within else None)
    sensitivity = result["sensitivity"]
    assert sensitivity == ours["sensitivity"] and sensitivity["samples"] == val_images
    assert (tiny / "results" / "cbnn_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    stage = result["input_stage"]       # the M4 profile of the input stage, both ways
    assert stage["float first conv"]["input stage"] == "first"
    for k in (8, 5):
        assert stage[f"{k} slices, binary first conv"]["input stage"] == "slices + binary"
    assert stage["5 slices, binary first conv"]["its MACs"] * 8 == \
        stage["8 slices, binary first conv"]["its MACs"] * 5
    assert all(row["its M4 instructions"] > 0 for row in stage.values())
    # counts depend on the architecture, not the weights: the untrained control's total
    # is the trained control's count to within 1 %
    assert stage["float first conv"]["total"] == pytest.approx(control["m4_instructions"],
                                                             rel=0.01)
    md = (tiny / "results" / "cbnn.md").read_text()
    assert "| cbnn_w50_s4 | [4, 5, 6, 7] | 0.5 | 1 |" in md
    assert "Bit-level sensitivity of the sliced baseline (`cbnn_w50_s4`" in md


def test_a_recomputed_cell_is_compared_as_its_json():
    """A fresh row holds tuples where the cached JSON holds lists: equal values are no
    difference; a differing value is, and timing never is."""
    cached = {"sensitivity": {"single": [1, 2]}, "lce_time_ratio": 0.9, "val_correct": 5}
    assert arena.differences(cached, {"sensitivity": {"single": (1, 2)},
                                      "lce_time_ratio": 0.7, "val_correct": 5}) == []
    assert arena.differences(cached, {"sensitivity": {"single": (1, 3)},
                                      "val_correct": 4}) == ["sensitivity", "val_correct"]


def test_recheck_names_the_values_that_differ(tiny, monkeypatch):
    """``--recheck`` records each differing number, cached and recomputed, in
    ``arena_recheck.md`` (the recomputation is faked: a cell whose M4 count changed)."""
    bench = arena.Arena(1, 0.01, log=lambda _: None)
    row = {"arm": "uniform_r30", "seed": 0, "m4_instructions": 4371898, "bit_exact": True}
    monkeypatch.setattr(bench, "arm", lambda arm, seed, rows, fresh=False: {
        **row, "m4_instructions": 4360935 if fresh else row["m4_instructions"]})
    found = arena.recheck("uniform_r30", bench)
    assert (found["differ"], found["values"]) == (
        ["m4_instructions"], {"m4_instructions": [4371898, 4360935]})
    arena.write_recheck(found)
    assert "| uniform_r30 | 0 | False | 4 | m4_instructions (4,371,898 cached, 4,360,935 " \
           "now) |" in (tiny / "results" / "arena_recheck.md").read_text()


def test_a_cached_cell_computed_under_another_default_is_stale(tiny):
    """A cell keeps its parameters as resolved; when a method's default changes, its
    cached cells are an error that names the parameter, never silently reused. A field
    the method did not have then is no change."""
    arm = arena.BY_NAME["uniform_r30"]
    bench = arena.Arena(1, 0.01, log=lambda _: None)
    key, _, resolved = bench.arm_cell(arm, 0, {})
    assert resolved["ratio"] == 0.3 and resolved["round_to"] == 8
    old = {k: v for k, v in resolved.items() if k != "recalibrate_bn"}  # a field added since
    files.write_json(protocol.cell_path(key), {**key, "resolved": old, "test_accuracy": 0.5})
    assert bench.arm(arm, 0, {})["test_accuracy"] == 0.5             # read, not computed
    files.write_json(protocol.cell_path(key), {**key, "resolved": {**old, "schedule": "gradual"}})
    with pytest.raises(arena.Stale, match="uniform_r30' seed 0 was computed with "
                                          "schedule='gradual' \\(the default is now 'oneshot'\\)"):
        bench.arm(arm, 0, {})
