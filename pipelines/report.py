"""The run report: report.md (tables), report.json (numbers), training_curves.png.

Each stage contributes its ``metrics`` to report.json and its ``markdown`` to
report.md; this module only assembles them and draws the curves.

Example::

    from pipelines.report import metrics_table
    print(metrics_table({"test": {"accuracy": 0.981, "loss": 0.07}}))
"""

from __future__ import annotations

import io

from bnnprune_tf import files

CURVES = "training_curves.png"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def metrics_table(rows: dict[str, dict]) -> str:
    """A markdown table with one row per key of ``rows`` and the union of columns."""
    columns: list[str] = []
    for values in rows.values():
        columns += [c for c in values if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def plot_history(history: list[dict], title: str = "") -> bytes:
    """PNG bytes of loss and accuracy curves (train and validation) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = prefix + metric
            if history and key in history[0]:
                ax.plot(epochs, [row[key] for row in history], style, marker="o",
                        markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def plot_histograms(histograms: dict[str, list[int]], title: str = "") -> bytes:
    """PNG bytes of one bar chart per entry (``counts[k]`` = items with value k), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(histograms))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
    for ax, (name, counts) in zip(axes[0], histograms.items()):
        ax.bar(range(len(counts)), counts, color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("flips")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_report(run) -> dict[str, str]:
    """Write the three report files of ``run``; returns their names."""
    recipe = run.recipe
    outputs = {"report_md": "report.md", "report_json": "report.json"}
    sections = [
        f"# Run `{recipe.name}`",
        f"Data: {run.dataset}. Model: `{recipe.model.name}` (width {recipe.model.width}). "
        f"Seed {recipe.seed}. Run directory: `{run.dir}`.",
    ]
    history = next((m["metrics"]["history"] for m in reversed(run.manifests)
                    if "history" in m.get("metrics", {})), None)
    if history:
        files.write_bytes(run.dir / CURVES, plot_history(history, recipe.name))
        outputs["curves"] = CURVES
    for m in run.manifests:
        if m.get("markdown"):
            sections.append(m["markdown"])
        if m["stage"] == "train" and history:
            sections.append(f"![training curves]({CURVES})")
    sections.append("### Stages\n\n" + metrics_table(
        {f"{m['index']}. {m['stage']}": {"seconds": m["seconds"]} for m in run.manifests}))
    files.write_text(run.dir / "report.md", "\n\n".join(sections) + "\n")
    files.write_json(run.dir / "report.json", {
        "recipe": recipe.model_dump(),
        "dataset": str(run.dataset),
        "stages": [{k: m.get(k) for k in ("stage", "index", "seconds", "outputs", "metrics")}
                   for m in run.manifests],
    })
    return outputs
