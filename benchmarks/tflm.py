"""Model and arena bytes of the exact int8 TFLM export vs float TFLite vs LCE.

Rows: mnist_bnn (width 1) and binary_mlp (width 1) trained briefly on mnist5k,
each unpruned and shrunk (50 % of the filters of every prunable group removed by
L1 norm with ``bnnprune_tf.prune.prune_filters``, then ``shrink`` and one epoch of
fine-tuning). For each model:

- ``tflm_int8``: :func:`converters.tflm.to_tflm` (float output), verified in the
  PyPI ``tflite-micro`` runtime bit for bit against the numpy integer reference
  (and ``tf.lite`` reference kernels) on the test samples; the arena is what
  tflite-micro reports;
- ``float_tflite``: ``tf.lite.TFLiteConverter`` on the Keras model;
- ``lce``: ``larq_compute_engine.convert_keras_model``.

The float and LCE files are also offered to tflite-micro to record why it
cannot run them (no SIGN kernel, LCE custom ops).

Run: ``python -m benchmarks.tflm [--epochs 2] [--samples 500]``
"""

from __future__ import annotations

import argparse
import os
import tempfile

import bnnprune_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import write_results
from bnnprune_tf import data, models, prune, shrink, training
from converters import tflm


def _tflm_error(flatbuffer: bytes, sample: np.ndarray) -> str:
    """What tflite-micro says about a model it cannot run ("" if it runs); its
    reasons go to the C stderr, which is captured here."""
    from tflite_micro import runtime

    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            interpreter = runtime.Interpreter.from_bytes(flatbuffer)
            interpreter.set_input(sample, 0)
            interpreter.invoke()
            error = ""
        except (RuntimeError, ValueError) as e:
            error = str(e)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        reasons = [line for line in log.read().decode(errors="replace").splitlines()
                   if "registration" in line or "not supported" in line.lower()]
    return "; ".join(reasons[:2] + [error]) if error else ""


def _ops(flatbuffer: bytes) -> list[str]:
    from converters import flatbuffer as reader

    return sorted({op.type for op in reader.read(flatbuffer).operators})


def measure(name: str, model, x, y) -> dict:
    import larq_compute_engine as lce

    flatbuffer = tflm.to_tflm(model, output="float", calibration=x)
    report = tflm.verify_tflm(model, flatbuffer, x)
    keras_acc = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    got, _ = tflm.run_tflm(flatbuffer, tflm.fold_lib.fold(model).quantize_input(x))
    # batch 1, as on a microcontroller (a dynamic batch leaves binary_mlp's Reshape
    # with unknown channels, which the TFLite converter rejects)
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda t: model(t, training=False)).get_concrete_function(spec)
    float_fb = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
    lce_fb = lce.convert_keras_model(model)
    return {
        "model": name,
        "params": int(model.count_params()),
        "tflm_int8": {"bytes": len(flatbuffer), "arena_bytes": report["arena_bytes"],
                      "ops": report["ops"], "bit_exact": report["bit_exact"],
                      "tflite_ref_bit_exact": report["tflite_bit_exact"],
                      "argmax_agreement_vs_keras": report["argmax_agreement"],
                      "integer_argmax_agreement_vs_keras": report["integer_argmax_agreement"],
                      "accuracy": float(np.mean(got.argmax(1) == y))},
        "float_tflite": {"bytes": len(float_fb), "ops": _ops(float_fb),
                         "tflm_error": _tflm_error(float_fb, x[:1])},
        "lce": {"bytes": len(lce_fb), "ops": _ops(lce_fb),
                "tflm_error": _tflm_error(lce_fb, x[:1])},
        "keras_accuracy": keras_acc,
        "samples": len(x),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=500)
    args = p.parse_args(argv)
    tf.keras.utils.set_random_seed(0)
    ds = data.load("mnist5k", seed=0)
    x, y = ds.arrays("test", limit=args.samples)
    rows = []
    for name in ("mnist_bnn", "binary_mlp"):
        model = models.build(name, ds.input_shape, ds.num_classes, width=1.0)
        training.train(model, ds, args.epochs, 1e-2, schedule="constant")
        rows.append(measure(name, model, x, y))
        small = shrink.shrink(prune.prune_filters(model, "l1", ratio=0.5))
        training.train(small, ds, 1, 1e-3, schedule="constant")
        rows.append(measure(f"{name} shrunk 50%", small, x, y))
    table = ["| model | params | TFLM int8 bytes | TFLM arena bytes | float .tflite bytes | "
             "LCE bytes | int8/LCE | bit-exact (TFLM, tf.lite ref) | argmax = Keras | "
             "acc TFLM / Keras |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["tflm_int8"]
        table.append(
            f"| {r['model']} | {r['params']} | {t['bytes']} | {t['arena_bytes']} | "
            f"{r['float_tflite']['bytes']} | {r['lce']['bytes']} | "
            f"{t['bytes'] / r['lce']['bytes']:.2f} | {t['bit_exact']}, {t['tflite_ref_bit_exact']} | "
            f"{t['argmax_agreement_vs_keras']:.3f} | {t['accuracy']:.3f} / {r['keras_accuracy']:.3f} |")
    errors = {f"{r['model']} {k}": r[k]["tflm_error"] for r in rows for k in ("float_tflite", "lce")}
    notes = [
        "",
        f"{args.samples} mnist5k test images; {args.epochs} training epochs; shrunk = 50 % of the "
        "filters removed by L1 norm, then 1 epoch of fine-tuning. The TFLM arena is what tflite-micro "
        "reports on this 64-bit host.",
        "",
        "tflite-micro on the other files: " + "; ".join(
            f"{k}: {v or 'ran'}" for k, v in list(errors.items())[:2]) + ".",
        "",
        "TFLM int8 ops: " + ", ".join(rows[0]["tflm_int8"]["ops"]) + ".",
    ]
    write_results("tflm", {"rows": rows, "epochs": args.epochs},
                  "\n".join(table + notes), "python -m benchmarks.tflm")


if __name__ == "__main__":
    main()
