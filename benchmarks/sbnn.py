"""SBNN (ECML PKDD 2023) on Fashion-MNIST against the dense BNN trained equally
(the protocol of ``../shared/reference/evaluation.md``).

Setup: ``vgg_small`` at width 1/4 (binary convs 32-32-64-64-128-128 after the float first
conv; conv2..conv6 go in the SBNN domain, the classifier stays binary), 20,000 training
images of the official training split (fixed by the seed), 6,000 validation, the official
10,000 test images; Adam, learning rate 1e-3 with cosine decay, batch 128, no augmentation,
op determinism on. Every arm trains ``--epochs`` epochs in total:

- ``dense``: the plain BNN (sign weights), seeds 0, 1, 2;
- ``sbnn``: from scratch at EC in {0.5, 0.25, 0.10, 0.05, 0.02} with the paper's gamma
  (CIFAR-10 table: 0, 0.02, 0.04, 0.07, 0.08); EC 0.05 with seeds 0, 1, 2, the others
  seed 0 only (marked ``seeds: 1``). The random initial weights are put in the domain by
  the closed-form start at EC (the ``EC`` share of largest initial weights connected),
  because the penalty's pull, ``lambda * 0.5 / N`` per weight with ``lambda * h`` fixed
  at ``gamma / (1 - gamma) * L_task``, is weak far from EC (``lambda`` grows as ``1 / h``
  only near it): from ``p_hat = 0.5`` it takes far more than this budget (the paper
  trains 500 epochs);
- ``sbnn_plain_init`` (EC 0.05, seed 0; last, left out when ``--max-minutes`` runs out):
  the reference's start (tau 1, phi 0, p_hat 0.5), to show what the penalty does here;
- ``sbnn_pretrained`` (``--pretrained``; EC 0.05, seed 0): the dense BNN trained half the
  epochs, put in the domain by the closed-form start, then SBNN for the other half.

Per model: ``p_hat`` reached, validation and test accuracy (integer counts), the paired
test loss against the dense BNN of the same seed (points), the binary MACs of the sparse
form (connections plus the shared all-ones filter), and, for seed 0, the C runtime on a
Cortex-M4 under QEMU (instructions per inference, exact count; weight bytes; outputs
checked bit for bit), the LCE flatbuffer (verified against Keras; its bytes) and whether
TFLM refuses. The EC 0.05 arm and the dense BNN also run on M7 and M55. Significance of
the headline arm: McNemar's exact test on the pooled test predictions of the 3 seeds.

Run: ``python -m benchmarks.sbnn [--epochs 1] [--pretrained]`` (about an hour on 2 busy CPU
cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import RESULTS, write_results
from bnnprune_tf import data, files, methods, models, reporting, training
from converters import fold

ECS = (0.5, 0.25, 0.10, 0.05, 0.02)
HEADLINE, SEEDS = 0.05, (0, 1, 2)
TRAIN, WIDTH, BATCH, LR, SAMPLES = 20000, 0.25, 128, 1e-3, 3
START = {"sbnn": "closed form of the random init at EC (from scratch)",
         "sbnn_plain_init": "tau 1, phi 0, random init (the reference's start)",
         "sbnn_pretrained": "closed form of the dense BNN trained half the epochs"}


def dataset(seed: int):
    full = data.load("fashion_mnist", seed=seed)
    return dataclasses.replace(full, x_train=full.x_train[:TRAIN], y_train=full.y_train[:TRAIN])


def fresh(ds, seed: int):
    return models.build("vgg_small", ds.input_shape, ds.num_classes, WIDTH, seed=seed)


def train_dense(ds, seed: int, epochs: int):
    model = fresh(ds, seed)
    training.train(model, ds, epochs, LR, batch_size=BATCH, seed=seed)
    return model


def train_sbnn(ds, seed: int, epochs: int, ec: float, start: str, start_model=None):
    method = methods.get("sbnn")(ec=ec, epochs=epochs, learning_rate=LR, start=start)
    result = method.run(fresh(ds, seed) if start_model is None else start_model,
                        methods.Context(ds, batch_size=BATCH, seed=seed))
    model = result.model
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model, result.metrics


def correct(model, ds, split: str) -> np.ndarray:
    x, y = ds.arrays(split)
    return np.argmax(model.predict(x, batch_size=500, verbose=0), axis=-1) == y


def deploy(model, ds, directory: Path, boards) -> dict:
    """C runtime (bit-exact check, instructions, weight bytes), LCE (verified), TFLM."""
    from converters import c_export, lce, tflm
    from converters import firmware as fw
    from bnnprune_tf.errors import ConversionError

    x, y = ds.arrays("test")
    info = c_export.write(model, directory, samples=x[:SAMPLES], labels=y[:SAMPLES])
    out = {"weight_bytes": info["weight_bytes"], "arena_bytes": info["arena_bytes"]}
    for board in boards:
        build = directory / board
        run = fw.run(directory, board, build)
        out[board] = {"exact": run["failed"] == 0 and run["passed"] == SAMPLES,
                      "instructions": int(statistics.median(
                          fw.count_instructions(directory, board, build))),
                      "flash_bytes": fw.size(directory, board, build)["flash"]}
    flatbuffer = lce.convert(model)
    check = lce.verify(model, flatbuffer, x[:1000], y[:1000], atol=1e-3)
    out["lce"] = {"bytes": len(flatbuffer), "argmax_agreement": check.argmax_agreement,
                  "max_abs_diff": check.max_abs_diff,
                  "binary_convs": lce.inspect(flatbuffer).ops.get("LceBconv2d", 0)}
    try:
        tflm.to_tflm(model)
        out["tflm"] = "exported"
    except ConversionError as e:
        out["tflm"] = f"refused: {str(e)[:120]}..."
    return out


def deployed(model, ds, directory: Path, arm: str, ec) -> dict:
    """Row fields of :func:`deploy`: M4 always, M7 and M55 for the dense and headline arms."""
    from converters import firmware as fw

    boards = ["mps2-an386"] + (["mps2-an500", "mps3-an547"]
                               if arm == "dense" or (arm, ec) == ("sbnn", HEADLINE) else [])
    d = deploy(model, ds, directory, [b for b in boards if b in fw.QEMU_BOARDS])
    return dict(weight_bytes=d["weight_bytes"], model_bytes=d["lce"]["bytes"],
                m4_instructions=d["mps2-an386"]["instructions"], deployment=d)


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired correctness vectors."""
    from scipy.stats import binomtest

    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if only_a + only_b == 0 else float(
        binomtest(only_a, only_a + only_b, 0.5).pvalue)


def figure(rows) -> reporting.Figure:
    sparse = sorted((r for r in rows if r["arm"] == "sbnn" and r["seed"] == 0),
                    key=lambda r: r["config"]["ec"])
    dense = next(r for r in rows if r["arm"] == "dense" and r["seed"] == 0)
    ecs = [r["config"]["ec"] for r in sparse]
    panels = {}
    for title, key in (("Cortex-M4 instructions / inference", "m4_instructions"),
                       ("C runtime weight bytes", "weight_bytes"),
                       ("test accuracy", "test_accuracy")):
        panels[title] = {"x": ecs, "series": {"SBNN": [r[key] for r in sparse],
                                              "dense BNN": [dense[key]] * len(ecs)}}
    return reporting.Figure("SBNN vs EC (seed 0)", "line", panels,
                            xlabel="EC (target share of connections)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", default="/tmp/bnnprune-sbnn",
                        help="finished arms are kept there; a rerun resumes from them")
    parser.add_argument("--redeploy", action="store_true",
                        help="measure the deployment of the saved models again (C runtime "
                             "changed); otherwise earlier measurements in --work are kept")
    parser.add_argument("--max-minutes", type=float, default=float("inf"),
                        help="start no new arm after this long; deploy and summarize the "
                             "finished ones (0: only that)")
    parser.add_argument("--pretrained", action="store_true",
                        help="add the arm started from the dense BNN trained half the epochs")
    args = parser.parse_args(argv)
    started, work, epochs = time.time(), Path(args.work), args.epochs
    work.mkdir(parents=True, exist_ok=True)
    plan = [("dense", None, 0), ("sbnn", HEADLINE, 0)]
    plan += [("sbnn", ec, 0) for ec in ECS if ec != HEADLINE]
    plan += [arm for s in SEEDS[1:] for arm in (("dense", None, s), ("sbnn", HEADLINE, s))]
    plan += [("sbnn_plain_init", HEADLINE, 0)]
    if args.pretrained:
        plan.append(("sbnn_pretrained", HEADLINE, 0))
    rows, hits = [], {}
    done = json.loads((work / "rows.json").read_text()) if (work / "rows.json").exists() else []
    for arm, ec, seed in plan:
        old = next((r for r in done if (r["arm"], r["config"].get("ec"), r["seed"])
                    == (arm, ec, seed) and r["epochs_total"] == epochs), None)
        if old is not None:           # resumed: an earlier run of this script finished it
            rows.append(old)
            hits[(arm, ec, seed)] = np.load(work / f"hits_{arm}_{ec}_{seed}.npy")
            continue
        if time.time() - started > 60 * args.max_minutes:
            print(f"stopping after {args.max_minutes} minutes: {arm} ec={ec} seed={seed} and "
                  "the arms after it are left out", flush=True)
            break
        ds = dataset(seed)
        t0 = time.time()
        metrics = {}
        if arm == "dense":
            model = train_dense(ds, seed, epochs)
        elif arm == "sbnn":
            model, metrics = train_sbnn(ds, seed, epochs, ec, "closed_form")
        elif arm == "sbnn_plain_init":
            model, metrics = train_sbnn(ds, seed, epochs, ec, "plain")
        else:
            model, metrics = train_sbnn(ds, seed, epochs - epochs // 2, ec, "closed_form",
                                        start_model=train_dense(ds, seed, epochs // 2))
        hits[(arm, ec, seed)] = test_hits = correct(model, ds, "test")
        row = {"method": "sbnn", "arm": arm, "seed": seed, "epochs_total": epochs,
               "config": {} if ec is None else {
                   "ec": ec, "gamma": metrics["gamma"], "start": START[arm]},
               "val_accuracy": float(correct(model, ds, "val").mean()),
               "test_correct": int(test_hits.sum()), "test_accuracy": float(test_hits.mean()),
               **fold.fold(model).binary_cost(), "train_minutes": round((time.time() - t0) / 60, 2)}
        if ec is not None:
            row.update(p_hat=metrics["p_hat"], reached=metrics["reached"],
                       p_hat_per_epoch=[r["p_hat"] for r in metrics["epochs"]],
                       layers=metrics["layers"])
        files.save_model(model, work / f"{arm}_{ec}_{seed}.keras")
        rows.append(row)
        np.save(work / f"hits_{arm}_{ec}_{seed}.npy", test_hits)
        files.write_json(work / "rows.json", rows)
        print(f"[{arm} ec={ec} seed={seed}] test {row['test_accuracy']:.4f} "
              f"p_hat {row.get('p_hat', 0.5):.4f} {row['train_minutes']} min", flush=True)
    # deployment of the seed-0 models, after all training (so --redeploy can measure a
    # changed C runtime on the same models)
    for row in rows:
        if row["seed"] != 0:
            continue
        ec = row["config"].get("ec")
        cache = work / f"deploy_{row['arm']}_{ec}.json"
        if cache.exists() and not args.redeploy:
            row.update(json.loads(cache.read_text()))
            continue
        model = tf.keras.models.load_model(work / f"{row['arm']}_{ec}_0.keras")
        fields = deployed(model, dataset(0), work / f"{row['arm']}_{ec}", row["arm"], ec)
        files.write_json(cache, fields)
        row.update(fields)
        print(f"[{row['arm']} ec={ec}] M4 {row['m4_instructions']:,} instructions, "
              f"{row['weight_bytes']:,} weight bytes", flush=True)
    dense_rows = {r["seed"]: r for r in rows if r["arm"] == "dense"}
    for row in rows:
        if row["arm"] == "dense":
            continue
        base = dense_rows[row["seed"]]
        row.update(test_accuracy_dense=base["test_accuracy"],
                   binary_macs_dense=base["binary_macs"],
                   binary_params_dense=base["binary_params"],
                   test_loss_points=100 * (base["test_accuracy"] - row["test_accuracy"]))
        if row["seed"] == 0:
            row.update(m4_instructions_ratio=base["m4_instructions"] / row["m4_instructions"],
                       weight_bytes_ratio=base["weight_bytes"] / row["weight_bytes"])
    summary = []
    for arm, ec in dict.fromkeys((r["arm"], r["config"].get("ec")) for r in rows if r["arm"] != "dense"):
        group = [r for r in rows if r["arm"] == arm and r["config"].get("ec") == ec]
        first = next(r for r in group if r["seed"] == 0)
        entry = {"method": "sbnn", "arm": arm, "config": first["config"], "seeds": len(group),
                 "p_hat": statistics.mean(r["p_hat"] for r in group),
                 "test_loss_points": statistics.mean(r["test_loss_points"] for r in group),
                 "test_loss_points_sd": statistics.stdev([r["test_loss_points"] for r in group])
                 if len(group) > 1 else None,
                 "binary_macs_reduction": 1 - first["binary_macs"] / first["binary_macs_dense"],
                 "binary_params_reduction": 1 - first["binary_params"]
                 / first["binary_params_dense"],
                 "m4_instructions_ratio": first["m4_instructions_ratio"],
                 "weight_bytes_ratio": first["weight_bytes_ratio"]}
        pooled_a = np.concatenate([hits[(arm, ec, r["seed"])] for r in group])
        pooled_d = np.concatenate([hits[("dense", None, r["seed"])] for r in group])
        entry["mcnemar_p_vs_dense"] = mcnemar(pooled_d, pooled_a)
        verdict = "ties" if entry["mcnemar_p_vs_dense"] >= 0.05 else (
            "beats" if entry["test_loss_points"] < 0 else "loses_to")
        entry[verdict] = ["dense"]
        summary.append(entry)
    fig = figure(rows)
    files.write_bytes(RESULTS / "sbnn.png", reporting.render_png(fig))
    payload = {"protocol": {"data": "fashion_mnist", "train_samples": TRAIN,
                            "val_samples": 6000, "test_samples": 10000, "model": "vgg_small",
                            "width": WIDTH, "epochs": epochs, "batch": BATCH,
                            "learning_rate": LR, "optimizer": "adam", "schedule": "cosine",
                            "seeds": {"dense": list(SEEDS), "sbnn ec 0.05": list(SEEDS),
                                      "other ec": [0]},
                            "scale": f"{epochs} epochs per arm (the paper: 500 on CIFAR-10)"},
               "rows": rows, "summary": summary, "figure": fig.to_dict(),
               "arms_left_out": [list(p) for p in plan if not any(
                   (r["arm"], r["config"].get("ec"), r["seed"]) == p for r in rows)],
               "train_minutes_total": round(sum(r["train_minutes"] for r in rows), 1),
               "minutes_this_run": round((time.time() - started) / 60, 1)}
    write_results("sbnn", payload, markdown(rows, summary, epochs, payload["arms_left_out"]),
                  f"python -m benchmarks.sbnn --epochs {epochs}"
                  + " --pretrained" * args.pretrained)


def markdown(rows, summary, epochs, left_out) -> str:
    dense = [r for r in rows if r["arm"] == "dense"]
    d0 = next(r for r in dense if r["seed"] == 0)
    lines = [f"VGG-Small width 1/4, Fashion-MNIST (20,000 training images), {epochs} epoch(s) "
             "per arm, Adam 1e-3 cosine. Dense BNN test accuracy "
             f"{100 * statistics.mean(r['test_accuracy'] for r in dense):.2f} % (mean of "
             f"{len(dense)} seeds); seed 0: {d0['m4_instructions']:,} Cortex-M4 instructions, "
             f"{d0['weight_bytes']:,} weight bytes.", "",
             "| arm | EC | gamma | seeds | p_hat | test loss (pt, vs dense) | McNemar p | "
             "binary MACs | M4 instructions (x fewer) | weight bytes (x fewer) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        r0 = next(r for r in rows if r["arm"] == s["arm"] and r["config"] == s["config"]
                  and r["seed"] == 0)
        sd = f" +- {s['test_loss_points_sd']:.2f}" if s["test_loss_points_sd"] is not None else ""
        lines.append(
            f"| {s['arm']} | {s['config']['ec']} | {s['config']['gamma']} | {s['seeds']} | "
            f"{s['p_hat']:.4f} | {s['test_loss_points']:+.2f}{sd} | "
            f"{s['mcnemar_p_vs_dense']:.3g} | -{100 * s['binary_macs_reduction']:.1f} % | "
            f"{r0['m4_instructions']:,} ({s['m4_instructions_ratio']:.2f}x) | "
            f"{r0['weight_bytes']:,} ({s['weight_bytes_ratio']:.2f}x) |")
    deployments = [r["deployment"] for r in rows if "deployment" in r]
    exact = all(d[b]["exact"] for d in deployments for b in d if b.startswith("mps"))
    lce_ok = all(d["lce"]["argmax_agreement"] == 1.0 for d in deployments)
    lines += ["", "Rows with 1 seed are a sweep (seed 0 only). Test loss: dense accuracy minus "
              "the arm's, same seed, in points (negative: the arm is better); McNemar on the "
              "pooled test predictions. p_hat: share of connections over conv2..conv6 at the "
              "end (target p_hat <= EC + 0.01). Binary MACs: connections plus the shared "
              "all-ones filter, against all weights of the dense BNN's binary convs. M4: "
              "instructions per inference under QEMU (mps2-an386, exact count); weight bytes: "
              "the C runtime's weights, thresholds and connection lists.", "",
              f"C runtime outputs bit-exact against the integer reference on every board run "
              f"(M4; M7 and M55 for the dense and EC 0.05 models): {exact}. LCE flatbuffers "
              f"verified against Keras (1,000 test images, argmax agreement 1.0, see "
              f"`deployment` in the JSON): {lce_ok}. TFLM int8: refused for SBNN layers "
              "(the all-ones term needs a real ratio per layer).", ""]
    if left_out:
        lines += ["Arms left out to keep the wall time: " + ", ".join(
            f"{a} ec={ec} seed={seed}" for a, ec, seed in left_out) + ".", ""]
    lines += ["![SBNN vs EC](sbnn.png)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
