"""The BNN pruning arena: every method and baseline through the method interface, on one
model and one data split, at equal epochs, by the evaluation protocol
(``../shared/reference/evaluation.md``).

Every arm is a row of :data:`ARMS`: a registered method (``bnnprune_tf.methods.get``), its
parameters, where it starts and a budget tag. Nothing here knows a method beyond that row:

- ``start="checkpoint"``: the method runs on the dense checkpoint (``vgg_small`` width 1/4,
  ``--epochs`` E, cached by ``benchmarks/protocol.py``) and trains K = 3 epochs inside its
  ``run`` (``Result.metrics["epochs_trained"]``); its control is the checkpoint trained
  K more epochs at lr/10 (``dense_k{K}``);
- ``prelude``: training a checkpoint method does before it prunes, here WFF's measuring
  interval (1 epoch at 3e-4 with coupled L2 decay on the latent weights, kept in its
  fine-tuning); its control (``dense_<prelude>_k{K}``) trains exactly so, and so do its
  matched baselines, which start from the checkpoint after the prelude
  (``start="prelude"``): equal training, only the choice of what to prune differs;
- ``start="scratch"``: the method runs on the seeded, untrained model for E + K epochs at
  the arena's lr; its control is the dense model trained so from scratch (``dense_scratch``);
- ``match=(arm, key)``: a baseline takes ``key`` (``widths`` kept, or the method's
  per-layer ``ratios``) from that arm's row of the same seed: equal cost by construction.

So every arm and every control trains E + K epochs in all (CBNN's ``base_epochs`` of
bit-sensitivity analysis aside).

Per final model (a cell cached by a hash of its inputs in ``benchmarks/cache/cells/``; the
key holds the arm's parameters as given, the cell also every parameter as the method
resolved it, and a cached cell that a changed default would compute differently is an
error, :class:`Stale`, never reused): binary MACs and binary weights of the integer form
(``converters.fold``: nonzero weights, SBNN connections plus the shared all-ones filter),
validation count, test accuracy and per-image correctness; the LCE flatbuffer (bytes,
``LceBconv2d`` count, argmax agreement with Keras on the first ``VERIFY`` test images);
the LCE time ratio to its control, both kernels, timed interleaved in one process; and,
where the C runtime runs the model, its Cortex-M4 instructions per inference, flash and
RAM under QEMU (``mps2-an386``), test vectors checked bit for bit. Headline arms run seeds
0, 1, 2; the others seed 0 (``seeds: 1`` in the tables).

Outputs: ``results/arena.json`` (the protocol's format), ``arena.md`` (one table per cost
axis, paired differences and McNemar verdicts against the arms of the same budget tag),
``arena_macs.png``, ``arena_m4.png``, ``arena_bytes.png`` (test accuracy against cost).

Run: ``python -m benchmarks.arena [--arms wff_i1 l1_r30] [--seeds 0] [--recheck ARM]
[--cached-only] [--retime] [--restore]`` (``--arms``/``--seeds`` run a part; the cache makes
a rerun resume; ``--cached-only`` reports what is cached so far; ``--restore`` puts the
cells of the committed ``arena.json`` back into an empty cache (:func:`restore`);
``--recheck ARM`` recomputes that arm's seed-0 cell and compares it with the cached one,
timing excluded (``results/arena_recheck.{json,md}``); ``--retime`` times the cached
flatbuffers again, for a run that shared the machine: run it last, with nothing else
running).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import bnnprune_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np

from benchmarks import protocol
from benchmarks.common import RESULTS, environment, write_results
from bnnprune_tf import errors, files, methods, models
from bnnprune_tf.methods import Context, flip_frequency
from bnnprune_tf.prune import kept_widths
from bnnprune_tf.reporting import Figure, render_png

VERIFY = 1000          # test images LCE is verified on
RUNS = 20              # interleaved LCE timing rounds per kernel
BOARD = "mps2-an386"   # Cortex-M4 under QEMU
KERNELS = ("default", "indirect_bgemm")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: ``method`` (registered name) with ``params``; ``start`` ``checkpoint``,
    ``prelude`` (the checkpoint after the arm's :data:`PRELUDES` entry) or ``scratch``;
    ``prelude`` names the training before pruning that the arm's control shares; arms with
    the same ``budget`` tag are compared; ``headline`` arms run 3 seeds; ``match``
    ``(arm, key)`` copies ``key`` from that arm's row; ``context`` overrides
    :class:`~bnnprune_tf.methods.Context` fields (e.g. a measuring rate)."""

    name: str
    method: str
    params: dict
    start: str = "checkpoint"
    budget: str = ""
    headline: bool = False
    match: tuple[str, str] | None = None
    context: dict = dataclasses.field(default_factory=dict)
    prelude: str = ""


@dataclasses.dataclass(frozen=True)
class Prelude:
    """``epochs`` at ``learning_rate`` from the checkpoint, with coupled L2 ``decay`` on the
    latent weights (:func:`~bnnprune_tf.methods.flip_frequency.latent_decay`), which the
    fine-tuning after it keeps."""

    epochs: int
    learning_rate: float
    decay: float


PRELUDES = {"wffm": Prelude(1, 3e-4, 1e-3)}     # WFF's measuring interval, as its arms run it


K = 3                  # epochs after the checkpoint, every post-training arm (E + K from scratch)
R8 = {"round_to": 8}   # LCE computes output channels in blocks of 8
ARMS = (
    # post-training, from the dense checkpoint; fine-tuned K epochs at lr/10
    Arm("l1_r20", "l1", {"ratio": 0.2, **R8, "epochs": K}, budget="r20"),
    Arm("l1_r30", "l1", {"ratio": 0.3, **R8, "epochs": K}, budget="r30", headline=True),
    Arm("random_r20", "random", {"ratio": 0.2, **R8, "epochs": K}, budget="r20"),
    Arm("random_r30", "random", {"ratio": 0.3, **R8, "epochs": K}, budget="r30",
        headline=True),
    Arm("latent_channel_r20", "latent", {"level": "channel", "budget": 0.65, **R8,
                                         "epochs": K}, budget="r20"),
    Arm("latent_channel_r30", "latent", {"level": "channel", "budget": 0.5, **R8,
                                         "epochs": K}, budget="r30", headline=True),
    Arm("latent_weight_w33", "latent", {"level": "weight", "budget": 0.67, "epochs": K},
        budget="w33"),
    Arm("latent_weight_w46", "latent", {"level": "weight", "budget": 0.54, "epochs": K},
        budget="w46", headline=True),
    Arm("random_weight_w46", "random", {"level": "weight", "epochs": K}, budget="w46",
        headline=True, match=("latent_weight_w46", "ratios")),
    # WFF's rounds: flips counted 1 epoch at 3e-4 (a tenth of the context's rate) with
    # latent decay (its prelude "wffm"), then its rounds' fine-tuning: 1 + 2 = K epochs for
    # one round, 1 + 1 + 1 for two; its budget is what the flips give, so its baselines
    # prune exactly its widths after the same prelude
    Arm("wff_i1", "wff", {"interval": 1, "iterations": 1, "accuracy_budget": 1.0,
                          "weight_decay": 1e-3, "every": 25, **R8, "epochs": K - 1},
        budget="wff_i1", headline=True, context={"learning_rate": 3e-3}, prelude="wffm"),
    Arm("wff_i2", "wff", {"interval": 1, "iterations": 2, "accuracy_budget": 1.0,
                          "weight_decay": 1e-3, "every": 25, **R8, "epochs": (K - 1) // 2},
        budget="wff_i2", context={"learning_rate": 3e-3}, prelude="wffm"),
    Arm("l1_wff_i1", "l1", {}, "prelude", budget="wff_i1", headline=True,
        match=("wff_i1", "widths"), prelude="wffm"),
    Arm("random_wff_i1", "random", {}, "prelude", budget="wff_i1", headline=True,
        match=("wff_i1", "widths"), prelude="wffm"),
    # training-time, from the seeded untrained model, E + K epochs
    Arm("uniform_r20", "l1", {"ratio": 0.2, **R8}, "scratch", "r20"),
    Arm("uniform_r30", "l1", {"ratio": 0.3, **R8}, "scratch", "r30", headline=True),
    Arm("etb_r30", "etb", {"ratio": 0.3}, "scratch", "r30", headline=True),
    Arm("etb_r50", "etb", {"ratio": 0.5}, "scratch", "r50"),
    # ETB with every layer keeping a quarter of its channels (trained at lr 1e-2, ETB's
    # former default, instead of the arena's, its seed 0 emptied three layers at r30, r50)
    Arm("etb_r30_c75", "etb", {"ratio": 0.3, "max_layer_ratio": 0.75}, "scratch", "r30",
        headline=True),
    # ETB's widths, pruned by L1 from the checkpoint or trained from scratch: equal
    # architecture and epochs, only how it was found and trained differs
    Arm("l1_etb_r30", "l1", {}, budget="r30", headline=True, match=("etb_r30", "widths")),
    Arm("uniform_etb_r30", "l1", {}, "scratch", "r30", headline=True,
        match=("etb_r30", "widths")),
    # ETB at the paper's VGG-Small ratio (46.3 %) and beyond, and L1 / random filter
    # pruning from the checkpoint at its exact widths
    Arm("etb_r46", "etb", {"ratio": 0.46}, "scratch", "r46", headline=True),
    Arm("etb_r60", "etb", {"ratio": 0.6}, "scratch", "r60"),
    Arm("l1_etb_r46", "l1", {}, budget="r46", headline=True, match=("etb_r46", "widths")),
    Arm("random_etb_r46", "random", {}, budget="r46", headline=True,
        match=("etb_r46", "widths")),
    # ETB r46's widths trained from scratch: what the architecture reaches in these epochs
    Arm("uniform_etb_r46", "l1", {}, "scratch", "r46", headline=True,
        match=("etb_r46", "widths")),
    # the decision at half of training (default: 70 %), so the decided network trains
    # longer at a higher lr; kept or not on validation
    Arm("etb_r46_s50", "etb", {"ratio": 0.46, "settle": 0.5}, "scratch", "r46", headline=True),
    Arm("sbnn_ec25", "sbnn", {"ec": 0.25, "gamma": 0.02, "start": "closed_form"}, "scratch",
        "ec25"),
    Arm("sbnn_ec05", "sbnn", {"ec": 0.05, "gamma": 0.07, "start": "closed_form"}, "scratch",
        "ec05", headline=True),
    Arm("cbnn_w75", "cbnn", {"widths": [0.75], "base_epochs": 2}, "scratch", "r20"),
    Arm("cbnn_w50", "cbnn", {"widths": [0.5], "base_epochs": 2}, "scratch", "r50"),
    # full width, all 8 slices: what the binary first conv alone costs
    Arm("cbnn_w100", "cbnn", {"widths": [1.0], "slices": list(range(8)), "base_epochs": 2},
        "scratch", "w100", headline=True),
    # the 5 most significant slices (the analysis keeps all 8): a binary first conv weighs
    # every slice alike, so the low bits may be noise to it
    Arm("cbnn_w50_s5", "cbnn", {"widths": [0.5], "slices": [3, 4, 5, 6, 7], "base_epochs": 2},
        "scratch", "r50"),
    # cbnn.py's choice: the fewest weight bytes within 1 % of the control on validation
    Arm("cbnn_w75_s5", "cbnn", {"widths": [0.75], "slices": [3, 4, 5, 6, 7], "base_epochs": 2},
        "scratch", "r20", headline=True),
    # the same cost spread over the layers by the core's per-layer sensitivity
    Arm("cbnn_w75_s5_sens", "cbnn", {"widths": [0.75], "slices": [3, 4, 5, 6, 7],
                                     "selector": "sensitivity", "base_epochs": 2},
        "scratch", "r20"),
    # the slices chosen on validation with the binary first conv (3 to 8 most significant)
    Arm("cbnn_w50_search", "cbnn", {"widths": [0.5], "slice_counts": [3, 4, 5, 6, 7, 8],
                                    "base_epochs": 2}, "scratch", "r50", headline=True),
)
BY_NAME = {a.name: a for a in ARMS}


RESTORE_HELP = ("put the cells of the committed results back into the cache (a fresh "
                "machine has none), train nothing")


class Missing(Exception):
    """A cell that is not in the cache, under ``cached_only``."""


class Stale(Exception):
    """A cached cell computed with other parameter values than its arm resolves to now
    (a method's default changed since); the key holds the parameters as given, so the
    cell itself keeps them as resolved."""


class Arena:
    """The cells of one protocol setting (``epochs`` E of the checkpoint, ``lr``) for
    ``arms`` (default :data:`ARMS`) on ``model`` (default the protocol's ``vgg_small``, at
    its width); ``cached_only``: a cell that is not cached raises :class:`Missing` (no
    training)."""

    def __init__(self, epochs: int, lr: float, log=print, cached_only: bool = False,
                 model: str | None = None, arms=ARMS):
        self.epochs, self.lr, self.log, self.cached_only = epochs, lr, log, cached_only
        self.setup = {**protocol.SETUP, **({"model": model} if model else {})}
        self.by_name = {a.name: a for a in arms}
        self.common = {"bench": "arena", "setup": self.setup, "epochs": epochs, "lr": lr,
                       "verify": VERIFY, "board": BOARD}
        self.reproduced: list[str] = []     # restored controls computed again, identical

    # ------------------------------------------------------------ models
    def checkpoint(self, ds, seed):
        return protocol.dense(ds, seed, self.epochs, self.lr, self.setup["width"],
                              self.setup["model"])

    def after_prelude(self, ds, seed, prelude: str):
        """The checkpoint trained as :data:`PRELUDES` ``[prelude]`` says (cached)."""
        p = PRELUDES[prelude]
        return protocol.prelude(ds, self.checkpoint(ds, seed), seed, p.epochs, p.learning_rate,
                                p.decay, self.common)

    def fresh(self, ds, seed):
        return models.build(self.setup["model"], ds.input_shape, ds.num_classes,
                            self.setup["width"], seed=seed)

    def context(self, ds, seed, epochs, **overrides) -> Context:
        fields = {"batch_size": self.setup["batch_size"], "seed": seed, "epochs": epochs,
                  "learning_rate": self.lr, "optimizer": self.setup["optimizer"],
                  "schedule": self.setup["schedule"], "log": lambda *_: None, **overrides}
        return Context(ds, **fields)

    # ------------------------------------------------------------ cells
    def control(self, ds, seed, after: int | None, prelude: str = "") -> dict:
        """``dense_k{after}``: the checkpoint trained ``after`` more epochs at lr/10;
        with ``prelude``, ``dense_<prelude>_k{after}``: the checkpoint after it, trained the
        rest of the ``after`` epochs at lr/10 with its decay; ``after=None``:
        ``dense_scratch``, E + K epochs from the untrained model. A control restored from
        results (:func:`restore`) has no flatbuffer, which the arms' LCE timing needs: it
        is computed again and must reproduce its row (:func:`reproduce`)."""
        def compute():
            if after is None:
                model = self.fresh(ds, seed)
                protocol.train(model, ds, self.epochs + K, self.lr, seed)
                total = self.epochs + K
            elif prelude:
                p = PRELUDES[prelude]
                model = flip_frequency.add_latent_decay(
                    models.copy_model(self.after_prelude(ds, seed, prelude)), p.decay)
                protocol.train(model, ds, after - p.epochs, self.lr / 10, seed)
                total = self.epochs + after
            else:
                model = models.copy_model(self.checkpoint(ds, seed))
                protocol.train(model, ds, after, self.lr / 10, seed)
                total = self.epochs + after
            return {"method": "dense", "config": {}, "epochs_total": total,
                    **self.deploy(model, ds, None, key)}

        key = self.control_key(seed, after, prelude)
        name = key["arm"]
        row = self.cell(key, compute)
        if not self.cached_only and "flatbuffer" in row and not cell_file(row).exists():
            reproduce(row, {**key, **compute()})     # restored from results: remade here
            self.reproduced.append(f"{name} seed {seed}")
        return row

    def control_key(self, seed: int, after: int | None, prelude: str = "") -> dict:
        """The cell key of :meth:`control` ``(ds, seed, after, prelude)``."""
        name = "dense_scratch" if after is None else \
            f"dense_{prelude}_k{after}" if prelude else f"dense_k{after}"
        return {**self.common, "arm": name, "seed": seed, "k": K, **prelude_key(prelude)}

    def arm(self, arm: Arm, seed: int, rows: dict, fresh: bool = False) -> dict:
        """The row of ``arm`` at ``seed`` (``rows``: the rows of the seed so far, which
        this adds to); ``fresh`` recomputes it even if it is cached."""
        key, compute, resolved = self.arm_cell(arm, seed, rows)
        row = {**key, **compute()} if fresh else self.cell(key, compute)
        changed = changed_defaults(row, resolved)
        if changed:
            raise Stale(
                f"the cached cell {protocol.cell_path(key).name} of arm {arm.name!r} seed "
                f"{seed} was computed with " + ", ".join(
                    f"{k}={old!r} (the default is now {new!r})" for k, (old, new) in
                    changed.items()) + f": method {arm.method!r}'s defaults changed since. "
                f"Move the cell out of {protocol.CACHE / 'cells'} to recompute it.")
        rows[arm.name] = row
        return row

    def arm_cell(self, arm: Arm, seed: int, rows: dict):
        """``(key, compute, resolved)`` of the cell of ``arm`` at ``seed``; ``resolved``:
        every parameter of the method as it runs (defaults included), which the cell
        keeps and :meth:`arm` checks a cached cell against."""
        params = dict(arm.params)
        after_prelude, scratch = arm.start == "prelude", arm.start == "scratch"
        prelude_epochs = PRELUDES[arm.prelude].epochs if after_prelude else 0
        if arm.match:                # the source's widths or ratios, and its epochs
            source = rows.get(arm.match[0]) or self.arm(self.by_name[arm.match[0]], seed, rows)
            params[arm.match[1]] = source[arm.match[1]]
            params["epochs"] = source["epochs_total"] - (0 if scratch else self.epochs) \
                - prelude_epochs
        cls = methods.get(arm.method)
        if after_prelude:            # the prelude's decay goes on while the method trains
            cls = protocol.with_decay(cls, PRELUDES[arm.prelude].decay)
        if "seed" in cls.Params.model_fields:
            params.setdefault("seed", seed)
        if scratch:                  # as dense_scratch trains: E + K epochs at lr
            params.setdefault("epochs", self.epochs + K)
            if cls.Params.model_fields["learning_rate"].default != self.lr:
                params.setdefault("learning_rate", self.lr)   # (at the default: key as before)
        else:
            params.setdefault("learning_rate", self.lr / 10)
        key = {**self.common, "arm": arm.name, "method": arm.method, "params": params,
               "start": arm.start, "context": arm.context, "seed": seed, "k": K,
               **prelude_key(arm.prelude)}
        method = cls(params)
        resolved = method.params.model_dump(mode="json")

        def compute():
            ds = protocol.dataset(seed)
            start = self.fresh(ds, seed) if scratch else \
                self.after_prelude(ds, seed, arm.prelude) if after_prelude else \
                self.checkpoint(ds, seed)
            result = method.run(start, self.context(
                ds, seed, self.epochs + (K if scratch else 0), **arm.context))
            trained = result.metrics["epochs_trained"] + prelude_epochs
            control_args = [None, ""] if scratch else [trained, arm.prelude]
            control = self.control(ds, seed, *control_args)
            return {"method": arm.method, "config": params, "resolved": resolved,
                    "budget": arm.budget,
                    "epochs_total": trained + (0 if scratch else self.epochs),
                    "control": control["arm"], "control_args": control_args,
                    "widths": widths_changed(result.model, start),
                    **{k: result.metrics[k] for k in ("ratios", "slices", "sensitivity")
                       if k in result.metrics},
                    **self.deploy(result.model, ds, control, key,
                                  pixels=result.metrics.get("input") == "pixels")}

        return key, compute, resolved

    def cell(self, key: dict, compute) -> dict:
        if self.cached_only and not protocol.cell_path(key).exists():
            raise Missing(key["arm"])
        return protocol.cell(key, compute, log=self.log)

    # ------------------------------------------------------------ measuring
    def deploy(self, model, ds, control: dict | None, key: dict, pixels: bool = False) -> dict:
        """Costs, accuracies and the deployed form of a final ``model`` (see the module
        docstring); the flatbuffer is kept next to the cell for later timing."""
        from converters import fold, lce
        from pipelines.stages.deploy import build_firmware, convert_lce

        view = ds.pixels() if pixels else ds
        row = protocol.measure(model, view)
        x, y = view.arrays("test", VERIFY)
        try:
            # agreement is measured, not required: a BatchNorm threshold that falls on an
            # integer sum (a tie at float32 precision) can round one way in Keras and the
            # other in LCE, and the flip propagates
            flatbuffer, lce_metrics, _ = convert_lce(model, x=x, y=y, atol=float("inf"),
                                                     min_agreement=0.0)
        except errors.BnnpruneError as e:          # zero weights inside kept filters
            row["lce"] = f"refused: {e}"
        else:
            path = protocol.cell_path(key, ".tflite")
            files.write_bytes(path, flatbuffer)
            info = lce.Inspection(**lce_metrics["inspect"])    # convert_lce inspected it
            row.update(model_bytes=len(flatbuffer), flatbuffer=path.name,
                       weight_bytes=info.constant_bytes,
                       float_conv2d=int(info.ops.get("CONV_2D", 0)),
                       lce_binary_convs=lce_metrics["binary_convs"]["LceBconv2d"],
                       lce_argmax_agreement=lce_metrics["verify"]["argmax_agreement"],
                       lce_max_abs_diff=lce_metrics["verify"]["max_abs_diff"])
            if control is not None:
                row["lce_time_ratio"] = lce_time_ratio(flatbuffer, stored(control))
        try:
            row.update(fold.fold(model).binary_cost())
            with tempfile.TemporaryDirectory() as tmp:
                _, targets, _ = build_firmware(model, Path(tmp), [BOARD], x[:5], y[:5])
            m4 = targets[BOARD]
            row.update(m4_instructions=m4["instructions_per_inference"], flash=m4["flash"],
                       ram=m4["ram"], bit_exact=m4["pass"] and targets["host"]["pass"])
        except errors.FirmwareError:      # our build or run failed: a defect, never a result
            raise
        except errors.ConversionError as e:
            row["c_runtime"] = f"refused: {e}"
        return row


def changed_defaults(row: dict, resolved: dict) -> dict[str, tuple]:
    """``{parameter: (value in row, value now)}`` for the parameters that the cell ``row``
    was computed with and that its arm now resolves to differently (``resolved``)."""
    return {k: (v, resolved[k]) for k, v in row.get("resolved", {}).items()
            if k in resolved and resolved[k] != v}


def prelude_key(prelude: str) -> dict:
    """The cell-key entry of a :data:`PRELUDES` name (none for ``""``)."""
    return {"prelude": dataclasses.asdict(PRELUDES[prelude])} if prelude else {}


def widths_changed(model, start) -> dict[str, int]:
    """Kept widths of ``model`` where they differ from ``start``'s."""
    before = kept_widths(start)
    return {n: w for n, w in kept_widths(model).items() if before.get(n) != w}


# ---------------------------------------------------------------- results
def summaries(rows: list[dict]) -> list[dict]:
    """One summary per arm (:func:`protocol.summarize` against the arm's own control);
    every arm is compared (McNemar) with the other arms of its budget tag, whatever their
    start; cost ratios are to the control of the same seed."""
    tags: dict[str, set] = {}
    for r in rows:
        if r.get("budget"):
            tags.setdefault(r["budget"], set()).add(r["arm"])
    comparisons = {arm: sorted(arms - {arm}) for arms in tags.values() for arm in arms}
    out = []
    for control in sorted({r["control"] for r in rows if "control" in r}):
        own = {r["arm"] for r in rows if r.get("control") == control}
        if not any(o["arm"] == control for o in out):
            own.add(control)
        controls = {r["seed"]: r for r in rows if r["arm"] == control}
        compared = own | {o for arm in own for o in comparisons.get(arm, ())}
        for s in protocol.summarize([r for r in rows if r["arm"] in compared], control,
                                    comparisons):
            if s["arm"] not in own:
                continue
            arm_rows = [r for r in rows if r["arm"] == s["arm"]]
            for cost in ("m4_instructions", "model_bytes"):
                pairs = [r[cost] / controls[r["seed"]][cost] for r in arm_rows
                         if cost in r and cost in controls.get(r["seed"], {})]
                if pairs:
                    s[f"{cost}_ratio"] = float(np.mean(pairs))
            times = [r["lce_time_ratio"] for r in arm_rows if "lce_time_ratio" in r]
            if times:
                s["lce_time_ratio"] = {k: float(np.mean([t[k] for t in times]))
                                       for k in KERNELS}
            s["budget"] = arm_rows[0].get("budget", "")
            s["control"] = control
            out.append(s)
    return out


def pareto(rows: list[dict], cost: str, label: str) -> Figure:
    """Test accuracy against ``cost``, one curve per method (mean over seeds per arm)."""
    points: dict[str, list] = {}
    for arm in sorted({r["arm"] for r in rows}):
        arm_rows = [r for r in rows if r["arm"] == arm and cost in r]
        if arm_rows:
            method = arm.rsplit("_", 1)[0] if not arm.startswith("dense") else "dense"
            points.setdefault(method, []).append(
                [float(np.mean([r[cost] for r in arm_rows])),
                 100 * float(np.mean([r["test_accuracy"] for r in arm_rows]))])
    return Figure(f"Test accuracy against {label}", "points", {label: {"series": points}},
                  xlabel=label, ylabel="test accuracy (%)")


def markdown(rows, sums, args) -> str:
    def fmt(s, key, spec):
        return format(s[key], spec) if key in s else ""

    lines = [f"{protocol.preamble(args.epochs, args.lr)} Post-training arms fine-tune at "
             f"lr/10 and are compared with the checkpoint trained as many epochs more "
             f"(`dense_kK`); WFF's arms measure flips in a prelude ("
             + "; ".join(f"`{n}`: {p.epochs} epoch(s) at lr {p.learning_rate} with latent "
                         f"decay {p.decay}" for n, p in PRELUDES.items())
             + "), which their control (`dense_<prelude>_kK`) and their matched baselines "
             "train too, with the decay kept in the fine-tuning; training-time arms train "
             f"{args.epochs + K} epochs from the seeded "
             "untrained model, like `dense_scratch`. Arms with the same budget tag are "
             "compared with each other. Budget tags group arms of about the same cost and "
             "are nominal: the L1, random and uniform arms at `rNN` remove NN % of a layer's "
             "channels with the kept width rounded down to a multiple of 8 (as "
             "Torch-Pruning's `round_to`), so their real cut is larger (32 channels at r30 "
             "keep 16); the table reports every arm's real cut. "
             f"{protocol.STATISTICS}", ""]
    missing = not_run(rows, [BY_NAME[a] for a in args.arms], args.seeds)
    if missing:
        lines += [f"Not run yet ({len(missing)}): {', '.join(missing)}.", ""]
    lines += ["| arm | budget | control | seeds | epochs | test acc | test loss (points) "
              "| binary MACs cut | binary params cut | LCE bytes ratio | LCE time default "
              "/ indirect | M4 instr ratio | beats | ties | loses |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for s in sums:
        lce = s.get("lce_time_ratio")
        lines.append(
            f"| {s['arm']} | {s['budget']} | {s['control']} | {s['seeds']} "
            f"| {s['epochs_total']} | {s['test_accuracy']:.4f} "
            f"| {s['test_loss_points']:+.2f} ± {s['test_loss_points_sd']:.2f} "
            f"| {s['binary_macs_reduction']:.1%} | {s['binary_params_reduction']:.1%} "
            f"| {fmt(s, 'model_bytes_ratio', '.3f')} "
            f"| {'' if not lce else f'{lce[KERNELS[0]]:.2f} / {lce[KERNELS[1]]:.2f}'} "
            f"| {fmt(s, 'm4_instructions_ratio', '.3f')} | {', '.join(s['beats'])} "
            f"| {', '.join(s['ties'])} | {', '.join(s['loses'])} |")
    lines += ["", "Per seed:", "", protocol.per_seed_table(rows, {
        "LCE bytes": lambda r: f"{r['model_bytes']:,}" if "model_bytes" in r else "refused",
        "LCE = Keras (argmax)": lambda r: f"{r['lce_argmax_agreement']:.3f}"
        if "lce_argmax_agreement" in r else "",
        "M4 instructions": lambda r: f"{r['m4_instructions']:,}" if "m4_instructions" in r
        else r.get("c_runtime", ""),
        "bit exact": lambda r: r.get("bit_exact", "")})]
    return "\n".join(lines)


def not_run(rows: list[dict], arms, seeds) -> list[str]:
    """``"<arm> seed <s>"`` for each cell of ``arms`` (:class:`Arm`) at ``seeds`` that
    ``rows`` lacks (seed 0 of every arm, every seed of a headline arm)."""
    done = {(r["arm"], r["seed"]) for r in rows}
    return [f"{a.name} seed {s}" for s in seeds for a in arms
            if (s == 0 or a.headline) and (a.name, s) not in done]


#: per-seed columns of a deployed cell in the views of arena cells (etb.py, cbnn.py)
DEPLOYED = {"LCE = Keras (argmax)": lambda r: f"{r['lce_argmax_agreement']:.3f}"
            if "lce_argmax_agreement" in r else r.get("lce", ""),
            "M4 instructions": lambda r: f"{r['m4_instructions']:,}"
            if "m4_instructions" in r else "",
            "bit exact": lambda r: r.get("bit_exact", "")}

#: the columns that end an arm's row in the views of arena cells (etb.py, cbnn.py)
OUTCOME = ("test acc | test loss (points) | LCE time | M4 instr ratio | beats | ties | loses |",
           "---:|---:|---:|---:|---|---|---|")


def outcome(s: dict) -> str:
    """The :data:`OUTCOME` cells of the summary ``s``: test accuracy, test loss (mean ±
    sd), LCE time ratio (default kernel), M4 instructions ratio and the McNemar verdicts."""
    lce, m4 = s.get("lce_time_ratio"), s.get("m4_instructions_ratio")
    return (f" {s['test_accuracy']:.4f} | {s['test_loss_points']:+.2f} ± "
            f"{s['test_loss_points_sd']:.2f} | {'' if not lce else f'{lce[KERNELS[0]]:.2f}'} "
            f"| {'' if m4 is None else f'{m4:.3f}'} | {', '.join(s['beats'])} "
            f"| {', '.join(s['ties'])} | {', '.join(s['loses'])} |")


def lce_time_ratio(flatbuffer: bytes, control: bytes) -> dict:
    """Arm time / control time (< 1: the arm is faster) per LCE kernel, both timed
    interleaved in one process (``RUNS`` rounds)."""
    from converters import bench

    results = bench.bench_host({"arm": flatbuffer, "control": control}, KERNELS, RUNS,
                               warmup=2, seed=0)
    return {k: bench.ratio(bench.find(results, "arm", k),
                           bench.find(results, "control", k))["ratio"] for k in KERNELS}


def retime(rows: list[dict]) -> None:
    """Time every arm's flatbuffer against its control's again and store the ratios in
    the rows and their cells: for cells computed while the machine was busy, rerun once
    with nothing else running."""
    by_arm = {(r["arm"], r["seed"]): r for r in rows}
    for row in rows:
        control = by_arm.get((row.get("control"), row["seed"]))
        if "flatbuffer" in row and control is not None and "flatbuffer" in control:
            row["lce_time_ratio"] = lce_time_ratio(stored(row), stored(control))
            files.write_json(cell_file(row).with_suffix(".json"), row)


def cell_file(row: dict) -> Path:
    """The flatbuffer file of the cached cell ``row``."""
    return protocol.CACHE / "cells" / row["flatbuffer"]


def stored(row: dict) -> bytes:
    """The flatbuffer of the cached cell ``row``; a cell restored from results has none."""
    path = cell_file(row)
    if not path.exists():
        raise FileNotFoundError(f"{row['arm']} seed {row['seed']}: its flatbuffer {path} is "
                                "not here (a cell restored from results); recompute the "
                                f"cell first, for an arm with --recheck {row['arm']}")
    return path.read_bytes()


def differences(cached: dict, fresh: dict) -> list[str]:
    """The fields of the cell ``cached`` (as read from its JSON) that ``fresh``, the same
    cell computed again, does not reproduce once written as JSON too (a tuple is a list
    there); LCE timing is a measurement and is left out."""
    fresh = as_json(fresh)
    return [k for k in cached if k != "lce_time_ratio" and cached[k] != fresh.get(k)]


def as_json(obj):
    """``obj`` as its JSON file holds it (tuples become lists)."""
    return json.loads(json.dumps(obj))


class NotReproduced(Exception):
    """A cell restored from results that this machine computes differently."""


def reproduce(cached: dict, fresh: dict) -> None:
    """Check that ``fresh``, the cell ``cached`` computed again (which wrote its
    flatbuffer), reproduces it; if not, remove that flatbuffer (the cell stays unverified)
    and raise :class:`NotReproduced`."""
    differ = differences(cached, fresh)
    if differ:
        cell_file(cached).unlink(missing_ok=True)
        raise NotReproduced(
            f"{cached['arm']} seed {cached['seed']}, restored from results, computes "
            f"differently here: {', '.join(differ)}. Cells made on this machine cannot be "
            f"compared with it: delete {protocol.cell_path(cached).parent} and recompute "
            "every arm of the report.")


def restore(rows: list[dict], arena: Arena) -> dict[str, list[str]]:
    """Write the cells of committed result ``rows`` (``results/arena.json``'s, or a view's)
    back into the cache, which a fresh machine lacks, so that reports regenerate and new
    arms run without recomputing the old ones. Each row goes under its key as this code
    computes it (``arena`` ``cached_only``: nothing is trained), after checking that the
    row holds that key and was computed with the parameters its arm resolves to now; a row
    that fails either (its arm changed since) or whose arm is gone is left out. A cell
    already cached must agree with the row on the fields both have (timing aside: the
    cached one is kept); they are merged. Flatbuffers are not committed: a restored
    control is computed again when an arm needs it (:meth:`Arena.control`), ``--recheck``
    recomputes an arm. Returns the ``"<arm> seed <s>"`` names ``restored`` and
    ``left_out``.

    Example::

        restore(json.loads((RESULTS / "arena.json").read_text())["rows"],
                Arena(4, 1e-3, cached_only=True))
    """
    done: dict[str, list[str]] = {"restored": [], "left_out": []}
    by_seed: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_seed.setdefault(row["seed"], {})[row["arm"]] = row
    for seed, seed_rows in sorted(by_seed.items()):
        keys, resolved = {}, {}
        for name, row in seed_rows.items():
            if name in arena.by_name:
                try:
                    keys[name], _, resolved[name] = arena.arm_cell(arena.by_name[name], seed,
                                                                  seed_rows)
                except Missing:                    # a matched arm without its source
                    continue
                if "control_args" in row:
                    control = arena.control_key(seed, *row["control_args"])
                    keys[control["arm"]] = control
        for name, row in seed_rows.items():
            key = as_json(keys.get(name, {}))
            if not key or any(row.get(k) != v for k, v in key.items()) or \
                    changed_defaults(row, resolved.get(name, {})):
                done["left_out"].append(f"{name} seed {seed}")
                continue
            path = protocol.cell_path(key)
            if path.exists():                      # timing: the cached measurement
                cached = json.loads(path.read_text())
                differ = [k for k in cached if k in row and k != "lce_time_ratio"
                          and cached[k] != row[k]]
                if differ:
                    raise ValueError(f"{name} seed {seed}: the cached cell {path} and the "
                                     f"results differ in {', '.join(differ)}; move the "
                                     "cell away to restore the results' row")
                row = {**row, **cached}
            files.write_json(path, row)
            done["restored"].append(f"{name} seed {seed}")
    return done


def restore_results(name: str, model: str | None = None, arms=ARMS) -> dict[str, list[str]]:
    """:func:`restore` the rows of ``model`` (default the protocol's) in the committed
    ``results/<name>.json``, with an arena of ``arms`` at the results' epochs and lr (a
    view's rows name their ``model``, which is not part of the cell)."""
    results = json.loads((RESULTS / f"{name}.json").read_text())
    model_name = model or protocol.SETUP["model"]
    rows = [{k: v for k, v in r.items() if k != "model"} for r in results["rows"]
            if r.get("model", protocol.SETUP["model"]) == model_name]
    return restore(rows, Arena(results["protocol"]["epochs"], results["protocol"]["lr"],
                               cached_only=True, model=model, arms=arms))


def run(arm_names, seeds, arena: Arena) -> list[dict]:
    """The rows of ``arm_names`` (seed 0; headline arms every seed) and their controls;
    under ``arena.cached_only`` the cached ones only."""
    rows = []
    for seed in seeds:
        seed_rows: dict[str, dict] = {}
        for name in arm_names:
            if seed == 0 or arena.by_name[name].headline:
                try:
                    rows.append(arena.arm(arena.by_name[name], seed, seed_rows))
                except Missing:
                    continue
        ds = protocol.dataset(seed)
        for after, prelude in sorted({tuple(r["control_args"]) for r in seed_rows.values()},
                                     key=str):
            rows.append(arena.control(ds, seed, after, prelude))
    return list({(r["arm"], r["seed"]): r for r in rows}.values())


def recheck(name: str, arena: Arena) -> dict:
    """Recompute ``name``'s seed-0 cell and compare it, and its flatbuffer, with the cached
    ones; LCE timing is a measurement and is left out. ``values``: cached and recomputed
    value of each differing number or string. A cell restored from results has no
    flatbuffer to compare; a restored control it needs is computed again too and must
    reproduce its row (``controls_reproduced``)."""
    rows: dict[str, dict] = {}
    first = arena.arm(arena.by_name[name], 0, rows)
    kept = "flatbuffer" in first and cell_file(first).exists()   # not in restored cells
    before = stored(first) if kept else None
    second = arena.arm(arena.by_name[name], 0, rows, fresh=True)
    differ = differences(first, second)
    values = {k: [first[k], second[k]] for k in differ
              if isinstance(first[k], (int, float, str)) and k in second}
    if kept and stored(second) != before:
        differ.append("flatbuffer bytes")
    return {"arm": name, "seed": 0, "identical": not differ, "differ": differ,
            "values": values,
            "fields_compared": len(first) - ("lce_time_ratio" in first),
            "flatbuffer_compared": kept, "controls_reproduced": arena.reproduced}


def write_recheck(found: dict) -> None:
    """Add ``found`` (:func:`recheck`) to ``results/arena_recheck.{json,md}``, one row per
    arm, the latest check of each."""
    path = RESULTS / "arena_recheck.json"
    rows = {r["arm"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() \
        else {}
    rows[found["arm"]] = {**found, "date": environment()["date"]}
    lines = ["Each arm's seed-0 cell computed again and compared field by field with the "
             "cached one: every image's test correctness, the validation count, binary "
             "MACs and parameters, kept widths, LCE bytes and argmax agreement, Cortex-M4 "
             "instructions, flash, RAM and bit-exactness, the method's resolved parameters "
             "(LCE timing, a measurement, left out). Cells restored from the committed "
             "results (`--restore`, a fresh machine) have no flatbuffer to compare, and "
             "the restored controls they need are computed again too and must reproduce "
             "their rows.", "",
             "| arm | seed | identical | fields compared | differing | flatbuffer bytes "
             "compared | controls computed again, identical | date |",
             "|---|---:|---|---:|---|---|---|---|"]
    for r in sorted(rows.values(), key=lambda r: r["arm"]):
        values = r.get("values", {})
        differ = [f"{k} ({values[k][0]:,} cached, {values[k][1]:,} now)"
                  if k in values and not isinstance(values[k][0], str) else k
                  for k in r["differ"]]
        lines.append(f"| {r['arm']} | {r['seed']} | {r['identical']} | {r['fields_compared']} "
                     f"| {', '.join(differ)} | {r['flatbuffer_compared']} "
                     f"| {', '.join(r['controls_reproduced'])} | {r['date']} |")
    write_results("arena_recheck", {"rows": list(rows.values())}, "\n".join(lines),
                  "python -m benchmarks.arena --recheck ARM")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=[a.name for a in ARMS], choices=BY_NAME)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--recheck", choices=BY_NAME)
    parser.add_argument("--cached-only", action="store_true",
                        help="report the cells computed so far (by runs that may still be "
                             "going on), train nothing")
    parser.add_argument("--retime", action="store_true",
                        help="time the LCE flatbuffers of the cells again (run it with "
                             "nothing else on the machine)")
    parser.add_argument("--restore", action="store_true", help=RESTORE_HELP)
    args = parser.parse_args(argv)
    if args.restore:
        print(restore_results("arena"))
        return
    arena = Arena(args.epochs, args.lr, cached_only=args.cached_only)
    if args.recheck:
        found = recheck(args.recheck, arena)
        print(found)
        write_recheck(found)
        return
    rows = run(args.arms, args.seeds, arena)
    if args.retime:
        retime(rows)
    sums = summaries(rows)
    for stem, cost, label in (("macs", "binary_macs", "binary MACs"),
                              ("m4", "m4_instructions", "Cortex-M4 instructions"),
                              ("bytes", "model_bytes", "LCE flatbuffer bytes")):
        files.write_bytes(RESULTS / f"arena_{stem}.png", render_png(pareto(rows, cost, label)))
    command = ("python -m benchmarks.arena --arms " + " ".join(args.arms) + " --seeds "
               + " ".join(map(str, args.seeds)) + f" --epochs {args.epochs} --lr {args.lr}"
               + " --cached-only" * args.cached_only + " --retime" * args.retime)
    write_results("arena", {"protocol": {**protocol.SETUP, "epochs": args.epochs,
                                         "lr": args.lr, "k": K},
                            "arms": [dataclasses.asdict(a) for a in ARMS if a.name in args.arms],
                            "rows": rows, "summary": sums},
                  markdown(rows, sums, args), command)


if __name__ == "__main__":
    main()
