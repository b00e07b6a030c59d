"""The run report: report.md (tables), report.json (numbers), PNG figures.

Stages return their section of the report as data: a list of blocks made by
:func:`heading`, :func:`text`, :func:`table` and :func:`figure`; this module
renders every block (tables with :func:`bnnprune_tf.reporting.markdown_table`,
figures with :func:`bnnprune_tf.reporting.render_png`) and assembles the files.

Example::

    from pipelines import report
    blocks = [report.heading("Evaluation"),
              report.table({"test": {"accuracy": 0.981, "loss": 0.07}})]
    print(report.render(blocks))
"""

from __future__ import annotations

from pathlib import Path

from bnnprune_tf import files
from bnnprune_tf.reporting import Figure, markdown_table, render_png

CURVES = "training_curves"


def heading(title: str) -> dict:
    return {"heading": title}


def text(paragraph: str) -> dict:
    return {"text": paragraph}


def table(rows: dict[str, dict], caption: str = "", first: str = "") -> dict:
    """A table block: ``rows`` is ``{row name: {column: value}}``."""
    return {"table": rows, "caption": caption, "first": first}


def figure(directory: Path, stem: str, fig: Figure, caption: str = "") -> dict:
    """Write ``fig`` as ``directory/stem.png`` and return the block that shows it."""
    files.write_bytes(Path(directory) / f"{stem}.png", render_png(fig))
    return {"figure": f"{stem}.png", "caption": caption or fig.title}


def render(blocks: list[dict]) -> str:
    """Markdown of a list of blocks."""
    parts = []
    for block in blocks:
        if "heading" in block:
            parts.append(f"### {block['heading']}")
        elif "text" in block:
            parts.append(block["text"])
        elif "table" in block:
            caption = f"{block['caption']}:\n\n" if block.get("caption") else ""
            parts.append(caption + markdown_table(block["table"], block.get("first", "")))
        elif "figure" in block:
            parts.append(f"![{block.get('caption', '')}]({block['figure']})")
    return "\n\n".join(parts)


def history_figure(history: list[dict], title: str = "") -> Figure:
    """Loss and accuracy per epoch (train and validation)."""
    epochs = [row["epoch"] for row in history]
    panels = {}
    for metric in ("loss", "accuracy"):
        keys = [k for k in (metric, f"val_{metric}") if history and k in history[0]]
        panels[metric] = {"x": epochs, "series": {k: [row[k] for row in history] for k in keys}}
    return Figure(title, "line", panels, xlabel="epoch")


def summary(manifests: list[dict]) -> dict:
    """Unpruned vs pruned, from the stages' metrics: binary MACs (the trained model vs the
    last pruned one), test accuracy (first vs last evaluation), flatbuffer bytes (first vs
    last LCE conversion) and the LCE time ratio of the last .tflite over the first per
    kernel. Only what the run measured."""
    def first_last(values):
        return {"before": values[0], "after": values[-1]} if len(values) > 1 else None

    def collected(stage, get):
        out = []
        for m in manifests:
            if m["stage"] == stage:
                value = get(m.get("metrics", {}))
                if value is not None:
                    out.append(value)
        return out

    macs = collected("train", lambda x: x.get("profile", {}).get("binary_macs")) + [
        m["metrics"]["after"]["binary_macs"] for m in manifests
        if m["stage"] in ("prune", "shrink")]
    result = {
        "binary_macs": first_last(macs),
        "test_accuracy": first_last(collected("evaluate",
                                              lambda x: x.get("test", {}).get("accuracy"))),
        "flatbuffer_bytes": first_last(collected(
            "convert", lambda x: x.get("inspect", {}).get("total_bytes"))),
    }
    ratios = collected("benchmark", lambda x: x.get("latest_vs_first"))
    if ratios:
        result["lce_time_ratio"] = ratios[-1]
    return {k: v for k, v in result.items() if v}


def write_report(run) -> dict[str, str]:
    """Write report.md, report.json and the training curves of ``run``; returns their names."""
    recipe = run.recipe
    outputs = {"report_md": "report.md", "report_json": "report.json"}
    blocks = [{"text": f"# Run `{recipe.name}`"},
              text(f"Data: {run.dataset}. Model: `{recipe.model.name}` (width "
                   f"{recipe.model.width}). Seed {recipe.seed}. Run directory: `{run.dir}`.")]
    history = next((m["metrics"]["history"] for m in reversed(run.manifests)
                    if "history" in m.get("metrics", {})), None)
    compared = summary(run.manifests)
    if compared:
        rows = {k.replace("_", " "): v for k, v in compared.items() if k != "lce_time_ratio"}
        rows.update({f"LCE time, {kernel} kernel (relative, measured side by side)":
                     {"before": 1.0, "after": ratio}
                     for kernel, ratio in compared.get("lce_time_ratio", {}).items()})
        blocks += [heading("Unpruned vs pruned"), table(rows)]
    for m in run.manifests:
        blocks += m.get("report", [])
        if m["stage"] == "train" and history:
            blocks.append(figure(run.dir, CURVES, history_figure(history, recipe.name),
                                 "training curves"))
            outputs["curves"] = f"{CURVES}.png"
    blocks.append(table({f"{m['index']}. {m['stage']}": {"seconds": m["seconds"]}
                         for m in run.manifests}, "Stages"))
    files.write_text(run.dir / "report.md", render(blocks) + "\n")
    files.write_json(run.dir / "report.json", {
        "summary": compared,
        "recipe": recipe.model_dump(),
        "dataset": str(run.dataset),
        "stages": [{k: m.get(k) for k in ("stage", "index", "seconds", "outputs", "metrics")}
                   for m in run.manifests],
    })
    return outputs
