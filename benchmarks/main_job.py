"""The README's main job (``pipelines/mnist_wff.yaml``) for seeds 0, 1 and 2.

Runs the shipped recipe unchanged except for its seed, each in its own run
directory, and collects ``report.json``'s ``summary``: binary MACs, test
accuracy, LCE flatbuffer bytes and LCE time ratio, unpruned vs pruned. The
claim it checks: at least 20 % fewer binary MACs at no more than 1 point of
test accuracy (counted in whole test images) for every seed.

    python benchmarks/main_job.py [--seeds 0 1 2] [--run-root runs/main_job] [--recipe R]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402
from bnnprune_tf.reporting import markdown_table  # noqa: E402
from pipelines.recipe import load_recipe  # noqa: E402
from pipelines.runner import run_recipe  # noqa: E402

RECIPE = "pipelines/mnist_wff.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-root", default="runs/main_job")
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--name", default="main_job", help="results file name")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        recipe = load_recipe(args.recipe).model_copy(update={"seed": seed})
        started = time.time()
        run_dir = run_recipe(recipe, Path(args.run_root) / f"seed{seed}", force=True,
                             log=lambda m: print(f"[seed {seed}] {m}", flush=True))
        report = json.loads((run_dir / "report.json").read_text())
        summary = report["summary"]
        test_samples = next(s["metrics"]["test"]["samples"] for s in report["stages"]
                            if s["stage"] == "evaluate")
        acc = summary["test_accuracy"]
        lost = round((acc["before"] - acc["after"]) * test_samples)     # whole images
        macs = summary["binary_macs"]
        rows.append({"seed": seed, "seconds": round(time.time() - started, 1),
                     "binary_macs_before": macs["before"], "binary_macs_after": macs["after"],
                     "binary_macs_reduction": 1 - macs["after"] / macs["before"],
                     "test_accuracy_before": acc["before"], "test_accuracy_after": acc["after"],
                     "test_images_lost": lost, "test_samples": test_samples,
                     "flatbuffer_bytes": summary["flatbuffer_bytes"],
                     "lce_time_ratio": summary.get("lce_time_ratio"),
                     "meets_claim": (1 - macs["after"] / macs["before"] >= 0.20
                                     and lost <= test_samples // 100)})
    table = markdown_table({f"seed {r['seed']}": {
        "binary MACs": f"{r['binary_macs_before']:,} -> {r['binary_macs_after']:,}",
        "reduction": f"{100 * r['binary_macs_reduction']:.1f} %",
        "test accuracy": f"{100 * r['test_accuracy_before']:.1f} -> "
                         f"{100 * r['test_accuracy_after']:.1f} %",
        "test images lost": f"{r['test_images_lost']} of {r['test_samples']}",
        "LCE time ratio (default / indirect)": " / ".join(
            f"{v:.2f}" for v in (r["lce_time_ratio"] or {}).values()),
        ">= 20 % at <= 1 point": r["meets_claim"],
        "run time (s)": r["seconds"]} for r in rows})
    table += ("\n\nRun time: the whole recipe (train, evaluate, convert, prune, evaluate, "
              "convert, benchmark, report) in this process, without Python's start-up; this "
              "2-core host runs at one of two speeds, so times of one seed vary up to 2x.")
    write_results(args.name, {"recipe": args.recipe, "rows": rows}, table,
                  "python benchmarks/main_job.py " + " ".join(sys.argv[1:]))
    print(table)


if __name__ == "__main__":
    main()
