"""Stages that deploy: ``convert`` (LCE or exact int8 TFLM), ``benchmark``, ``firmware``.

:func:`convert_lce` and :func:`build_firmware` are the bodies of the stages and of
``bnnprune convert`` / ``bnnprune firmware build``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from bnnprune_tf import files, prune
from pipelines import report as report_lib
from pipelines.stages.base import NoParams, stage


class ConvertParams(NoParams):
    target: Literal["arm", "xcore", "tflm"] = "arm"   # tflm: exact int8 for stock TFLM
    split: Literal["train", "val", "test"] = "test"
    atol: float = Field(1e-3, ge=0)
    min_agreement: float = Field(1.0, ge=0, le=1)


def _convert_tflm(run, params):
    """Exact int8 TFLM export in ``tflm/``, verified in tflite-micro and tf.lite on a split."""
    from converters import tflm

    x, _ = run.dataset.arrays(params.split)
    report = tflm.write_c_source(run.load_model(), x, run.dir / "tflm",
                                 tflite_name="model_tflm.tflite")
    metrics = {k: v for k, v in report.items() if k != "files"}
    return {
        "outputs": {"tflite": "tflm/model_tflm.tflite", "tflm_c": "tflm/model_data.cc"},
        "metrics": {"tflm": {"split": params.split, **metrics}},
        "report": [
            report_lib.heading("Exact int8 export for TensorFlow Lite Micro: "
                               "`tflm/model_tflm.tflite`"),
            report_lib.text(f"Ops: {', '.join(report['ops'])}; {report['model_bytes']} bytes; "
                            f"TFLM arena {report['arena_bytes']} bytes. Model data for "
                            "`firmware/tflm`: `tflm/model_data.h/.cc`."),
            report_lib.table({params.split: {
                k: metrics[k] for k in ("bit_exact", "tflite_bit_exact", "argmax_agreement",
                                        "integer_argmax_agreement")}},
                f"On the {params.split} split"),
        ],
    }


def convert_lce(model, target: str = "arm", x=None, y=None, atol: float = 1e-3,
                min_agreement: float = 1.0):
    """Strip pruning state once, lint, convert with LCE, inspect and (given ``x``) verify
    against Keras; returns ``(flatbuffer, metrics, report blocks)``.

    Example::

        flatbuffer, metrics, blocks = convert_lce(model, x=x_test, y=y_test)
    """
    from converters import lce, lint

    plain = prune.strip_pruning(model)
    findings = lint.lint(plain)
    flatbuffer = lce.convert(plain, target=target)
    info = lce.inspect(flatbuffer)
    expected = len(lint.binary_conv_layers(plain, findings))
    bconvs = info.ops.get(lce.BINARY_CONV, 0)
    metrics = {"inspect": info.to_dict(),
               "binary_convs": {"expected": expected, "LceBconv2d": bconvs},
               "lint": [f.to_dict() for f in findings]}
    blocks = [report_lib.text(f"Binary convolutions: {bconvs} `LceBconv2d` of {expected} "
                              "expected by lint."), report_lib.table(info.op_rows(), first="op"),
              report_lib.table(info.byte_rows()), report_lib.text(info.summary())]
    if x is not None:
        check = lce.verify(plain, flatbuffer, x, y, atol=atol, min_agreement=min_agreement)
        metrics["verify"] = check.to_dict()
        blocks.append(report_lib.table({"Keras vs LCE": {k: v for k, v in check.to_dict().items()
                                                          if v is not None}}))
    blocks.append(report_lib.heading("Lint"))
    blocks.append(report_lib.table(lint.rows(findings), first="layer") if findings else
                  report_lib.text(lint.to_markdown(findings)))
    return flatbuffer, metrics, blocks


@stage("convert", ConvertParams)
def convert(run, params):
    """Lint, convert with LCE (``model.keras`` -> ``model.tflite``), verify against Keras on
    a split, inspect. ``target: tflm`` writes the exact int8 TFLM export instead."""
    if params.target == "tflm":
        return _convert_tflm(run, params)
    name = run.latest_output("model").stem + ".tflite"   # model.keras -> model.tflite
    x, y = run.dataset.arrays(params.split)
    flatbuffer, metrics, blocks = convert_lce(run.load_model(), params.target, x, y,
                                              params.atol, params.min_agreement)
    metrics["verify"]["split"] = params.split
    files.write_bytes(run.dir / name, flatbuffer)
    return {"outputs": {"tflite": name}, "metrics": metrics,
            "report": [report_lib.heading(f"LCE conversion (target {params.target}): `{name}`"),
                       report_lib.text(f"Verified on the {params.split} split."), *blocks]}


class BenchmarkParams(NoParams):
    runs: int = Field(50, ge=1)
    warmup: int = Field(5, ge=0)
    threads: int = Field(1, ge=1)
    kernels: list[Literal["default", "indirect_bgemm"]] = ["default", "indirect_bgemm"]
    device: str | None = None          # ssh://user@host or adb[:serial]; None = this host
    binary: str | None = None          # lce_benchmark_model path on the device
    profile: bool = False              # per-op profile (device only)
    compare: bool = True               # also time every earlier .tflite of the run, interleaved


def check_benchmark(recipe, params, model) -> None:
    """A device string must parse before anything runs."""
    if params.device:
        from converters import bench

        bench.parse_device(params.device)


@stage("benchmark", BenchmarkParams, check=check_benchmark)
def benchmark(run, params):
    """Latency of the latest .tflite (and, with ``compare``, of the run's earlier ones, e.g.
    unpruned vs pruned, interleaved): LCE interpreter here, or lce_benchmark_model."""
    from converters import bench

    path = run.latest_output("tflite")
    models = {p.stem: p for p in run.all_outputs("tflite")} if params.compare else {}
    models[path.stem] = path
    if params.device:
        results = bench.bench_device(models, params.device, params.kernels, params.runs,
                                     params.warmup, params.threads, params.profile,
                                     binary=params.binary)
        note = f"`lce_benchmark_model` on `{params.device}`."
    else:
        results = bench.bench_host(models, params.kernels, params.runs, params.warmup,
                                   params.threads, seed=run.recipe.seed)
        note = ("LCE Python interpreter on this host, kernels interleaved in one run. x86 runs "
                "portable C++ bconv kernels, not ARM's: use these numbers as ratios only.")
    metrics = {f"{r.model}/{r.kernel}": r.to_dict() for r in results}
    blocks = [report_lib.heading(f"Latency of `{path.name}`"), report_lib.text(note),
              report_lib.table(bench.rows(results), first="model | device | kernel")]
    blocks += [report_lib.table(bench.op_rows(r), first=f"op ({r.model}, {r.kernel}) | name")
               for r in results if r.ops]
    ratios, base = {}, next(iter(models))        # base: the run's first .tflite
    for kernel in params.kernels:
        for name in models:
            if name != base:
                ratios[f"{name} / {base} ({kernel})"] = bench.ratio(
                    bench.find(results, name, kernel), bench.find(results, base, kernel))
    if len(params.kernels) == 2:
        second, first = (bench.find(results, path.stem, k) for k in reversed(params.kernels))
        ratios[f"{path.stem}: {params.kernels[1]} / {params.kernels[0]}"] = bench.ratio(second,
                                                                                      first)
    if path.stem != base:
        metrics["latest_vs_first"] = {k: ratios[f"{path.stem} / {base} ({k})"]["ratio"]
                                      for k in params.kernels}
    if ratios:
        metrics["ratios"] = ratios
        blocks.append(report_lib.table({k: {"ratio": v["ratio"], "method": v["method"]}
                                        for k, v in ratios.items()},
                                       "Time ratios (< 1: faster), measured side by side"))
    return {"metrics": metrics, "report": blocks}


class FirmwareParams(NoParams):
    boards: list[str] = ["mps2-an386", "mps3-an547"]   # QEMU boards of firmware/boards/boards.tsv
    split: Literal["train", "val", "test"] = "test"
    samples: int = Field(5, ge=1, le=200)   # test vectors embedded in the firmware
    profile: bool = True                    # instructions per layer on the first board

    @field_validator("boards")
    @classmethod
    def _qemu_boards(cls, boards):
        from converters.firmware import QEMU_BOARDS

        unknown = [b for b in boards if b not in QEMU_BOARDS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a QEMU board; use "
                             f"{', '.join(QEMU_BOARDS)} (firmware/boards/boards.tsv)")
        return boards


def build_firmware(model, directory, boards, x=None, y=None, profile: bool = False
                   ) -> tuple[dict, dict, dict | None]:
    """Export ``model`` for the C runtime into ``directory/model``, run its test vectors on
    the host build and under QEMU on ``boards``, count instructions (per layer on the first
    board with ``profile``); returns ``(export info, {target: row}, profile or None)``.

    Example::

        info, rows, _ = build_firmware(model, "build/fw", ["mps2-an386"], x_test[:5], y_test[:5])
    """
    from converters import c_export
    from converters import firmware as fw

    info = c_export.write(model, directory / "model", samples=x, labels=y, boards=boards)
    rows = {"host": fw.run(directory / "model", "host", directory / "host")}
    for board in boards:
        counts = fw.count_instructions(directory / "model", board, directory / board)
        rows[board] = {**fw.run(directory / "model", board, directory / board),
                       "core": fw.QEMU_BOARDS[board],
                       "instructions_per_inference": int(np.median(counts)),
                       **fw.size(directory / "model", board, directory / board)}
    for row in rows.values():
        row.pop("output")
        row["pass"] = row["failed"] == 0
    layers = (fw.profile(directory / "model", boards[0], directory / f"profile-{boards[0]}")
              if profile and boards else None)
    return info, rows, layers


@stage("firmware", FirmwareParams)
def firmware(run, params):
    """Export the latest model (plain, shrunk or masked) for the C runtime, run its test
    vectors on the host build and under QEMU, and count instructions per inference (and
    per layer on the first board)."""
    from converters import firmware as fw

    x, y = run.dataset.arrays(params.split, limit=params.samples)
    info, rows, layers = build_firmware(run.load_model(), run.work_dir("firmware"),
                                        params.boards, x, y, params.profile)
    accuracy = float(np.mean(np.array(rows["host"]["predictions"]) == y))
    table = {f"{name}{' (' + row['core'] + ')' if 'core' in row else ''}": {
        "test vectors": f"{row['passed']} passed, {row['failed']} failed",
        "instructions / inference": row.get("instructions_per_inference", ""),
        "flash B": row.get("flash", ""), "RAM B": row.get("ram", "")}
        for name, row in rows.items()}
    return {
        "outputs": {"firmware_model": "firmware/model/model_data.c"},
        "metrics": {"firmware": {"split": params.split, "weight_bytes": info["weight_bytes"],
                                 "arena_bytes": info["arena_bytes"],
                                 "accuracy_on_vectors": accuracy, "targets": rows,
                                 "profile": layers}},
        "report": [
            report_lib.heading("C runtime for Cortex-M: `firmware/model/model_data.c`"),
            report_lib.text(f"{len(x)} {params.split} images embedded as test vectors; the "
                            "firmware's int32 sums must equal Python's bit for bit. Weights "
                            f"{info['weight_bytes']} B, arena {info['arena_bytes']} B. "
                            "Instructions counted under QEMU by the project's TCG plugin."),
            report_lib.table(table, first="target"),
            *([report_lib.table(fw.profile_rows(layers), f"Instructions per layer, "
                                f"{layers['board']} ({layers['core']}), one inference",
                                first="layer")] if layers else [])],
    }
