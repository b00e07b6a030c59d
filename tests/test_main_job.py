"""The README's main job (`make demo`) end to end: it must stay true."""

import json

from pipelines.runner import run_recipe

KERNELS = ("default", "indirect_bgemm")


def test_main_job_trains_prunes_converts_and_reports(tmp_path):
    run_dir = run_recipe("pipelines/mnist_wff.yaml", tmp_path, log=lambda m: None)
    for name in ("report.md", "report.json", "training_curves.png", "model.keras",
                 "model_wff.keras", "model.tflite", "model_wff.tflite", "wff_flips.png"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    stages = {(m["index"], m["stage"]): m for m in report["stages"]}
    trained = stages[(1, "evaluate")]["metrics"]["test"]["accuracy"]
    assert trained >= 0.95                                     # the bar on mnist5k
    wff = stages[(3, "prune")]["metrics"]
    assert wff["method"] == "wff"
    assert wff["after"]["binary_macs"] <= 0.8 * wff["before"]["binary_macs"]   # >= 20 % cut
    pruned = stages[(4, "evaluate")]["metrics"]["test"]["accuracy"]
    samples = stages[(4, "evaluate")]["metrics"]["test"]["samples"]
    assert round((trained - pruned) * samples) <= samples // 100        # <= 1 point, in images
    assert report["summary"]["binary_macs"] == {"before": wff["before"]["binary_macs"],
                                                "after": wff["after"]["binary_macs"]}
    assert [it["index"] for it in wff["iterations"]][:2] == [0, 1]         # measured, pruned
    assert (run_dir / "wff_flips.png").read_bytes()[:4] == b"\x89PNG"
    converted = stages[(5, "convert")]["metrics"]
    assert converted["verify"]["argmax_agreement"] == 1.0
    assert converted["binary_convs"]["LceBconv2d"] == converted["binary_convs"]["expected"] == 3
    ratios = stages[(6, "benchmark")]["metrics"]["ratios"]
    assert all(ratios[f"model_wff / model ({k})"]["ratio"] > 0 for k in KERNELS)
    assert report["summary"]["lce_time_ratio"] == {
        k: ratios[f"model_wff / model ({k})"]["ratio"] for k in KERNELS}
    assert report["summary"]["flatbuffer_bytes"]["after"] == converted["inspect"]["total_bytes"]
    md = (run_dir / "report.md").read_text()
    assert md.index("### Unpruned vs pruned") < md.index("### Model")
    assert "| LCE time, default kernel (relative, measured side by side) | 1 |" in md
