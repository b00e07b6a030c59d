"""What flips mark: p_l under the paper's and the official code's measuring conditions, and
the method's own check (methods.md section 1.5) that flipped weights matter less.

On the trained MNIST BNN of the main job (``mnist_bnn``, 15 epochs on mnist5k, seed 0; one
seed, a sweep), flips are counted over a 3-epoch interval under four settings: a tenth of
the training learning rate (what the main job did before), the full rate, and a tenth with
coupled L2 decay (1e-4, 1e-3) on the latent weights of the counted layers (the official
code trains with coupled decay). For each: p_l per layer, validation images correct, and
the check: flip the signs of the weights that flipped at least once (per layer, in the
counted layers) vs. of as many randomly chosen weights that never flipped; the accuracy
cost of each on the validation split, in images.

    python benchmarks/wff_flips.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402
from bnnprune_tf import data, layer_facts, models, training  # noqa: E402
from bnnprune_tf.methods import flip_frequency as wff  # noqa: E402
from bnnprune_tf.reporting import markdown_table  # noqa: E402

SETTINGS = [("lr/10", 1e-3, 0.0), ("lr", 1e-2, 0.0), ("lr/10 + decay 1e-4", 1e-3, 1e-4),
            ("lr/10 + decay 1e-3", 1e-3, 1e-3)]
INTERVAL = 3


def sign_flip_cost(model, ds, flipped: dict, rng) -> tuple[int, int]:
    """Validation images lost when the weights in ``flipped`` change sign, and when as many
    never-flipped weights (random, per layer) do."""
    base = training.count_correct(model, ds, "val")
    costs = []
    for choose_flipped in (True, False):
        copy = models.copy_model(model)
        for name, mask in flipped.items():
            kernel = layer_facts.latent_kernel(copy.get_layer(name))
            chosen = mask if choose_flipped else np.zeros_like(mask)
            if not choose_flipped:
                never = np.flatnonzero(~mask.ravel())
                picked = rng.choice(never, size=min(int(mask.sum()), len(never)), replace=False)
                chosen.ravel()[picked] = True
            kernel.assign(np.where(chosen, -kernel.numpy(), kernel.numpy()))
        costs.append(base - training.count_correct(copy, ds, "val"))
    return costs[0], costs[1]


def main() -> None:
    ds = data.load("mnist5k", seed=0)
    trained = models.build("mnist_bnn", ds.input_shape, ds.num_classes, seed=0)
    training.train(trained, ds, 15, 1e-2, seed=0)
    rows = []
    for name, lr, decay in SETTINGS:
        model = models.copy_model(trained)
        term = wff.latent_decay(model, decay)
        if term is not None:
            model.add_loss(term)
        tracker = wff.FlipTracker(last_epochs=INTERVAL)
        training.train(model, ds, INTERVAL, lr, seed=1, callbacks=[tracker])
        stats = tracker.stats()
        counts = tracker.counter.counts_numpy()
        flipped = {n: c > 0 for n, c in counts.items()}
        lost_flipped, lost_other = sign_flip_cost(model, ds, flipped, np.random.default_rng(0))
        rows.append({"setting": name, "learning_rate": lr, "weight_decay": decay,
                     "interval_epochs": INTERVAL, "seed": 0, "seeds": 1,
                     "p": {n: s.p for n, s in stats.items()},
                     "val_correct": training.count_correct(model, ds, "val"),
                     "val_samples": len(ds.split("val")[1]),
                     "weights_flipped": int(sum(m.sum() for m in flipped.values())),
                     "val_images_lost_flipping_flipped": lost_flipped,
                     "val_images_lost_flipping_as_many_unflipped": lost_other})
        print(rows[-1], flush=True)
    table = markdown_table({r["setting"]: {
        **{f"p_l {n}": f"{p:.3f}" for n, p in r["p"].items()},
        "val correct": f"{r['val_correct']} / {r['val_samples']}",
        "weights flipped": r["weights_flipped"],
        "images lost: flip the flipped": r["val_images_lost_flipping_flipped"],
        "images lost: flip as many unflipped": r["val_images_lost_flipping_as_many_unflipped"]}
        for r in rows}, "measured with")
    write_results("wff_flips", {"rows": rows}, "One seed (a sweep). " + table,
                  "python benchmarks/wff_flips.py")
    print(table)


if __name__ == "__main__":
    main()
