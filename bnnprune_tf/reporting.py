"""Report data and its two renderers: every table and every plot goes through here.

Methods and stages report *data*: tables as rows (``{row name: {column:
value}}``) and plots as :class:`Figure`; :func:`markdown_table` and
:func:`render_png` turn them into markdown and PNG bytes, in one style.

Example::

    from bnnprune_tf.reporting import Figure, markdown_table, render_png

    print(markdown_table({"test": {"accuracy": 0.981, "loss": 0.07}}))
    png = render_png(Figure("loss", "line", {"": {"x": [1, 2, 3],
                                                  "series": {"train": [0.9, 0.5, 0.4]}}}))
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Literal


def _cell(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: dict[str, dict], first: str = "") -> str:
    """A markdown table: one row per key of ``rows``, the union of their columns;
    ``first`` heads the column of row names."""
    columns: list[str] = []
    for values in rows.values():
        columns += [c for c in values if c not in columns]
    lines = [f"| {first} | " + " | ".join(columns) + " |",
             "|" + "---|" * (first.count(" | ") + 1) + "---:|" * len(columns)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(values.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


@dataclass
class Figure:
    """A plot as data: one panel per key of ``panels``, each ``{"x": [...], "series":
    {label: [y, ...]}}``; ``kind`` ``"line"`` or ``"bar"``, or ``"points"`` where each
    series is its own ``[[x, y], ...]`` (drawn as markers joined in x order: one curve
    per method of a Pareto plot); ``hlines`` are dashed horizontal lines ``{label: y}``
    drawn on every panel.

    Example::

        Figure("flips per weight", "bar",
               {"conv2": {"x": [0, 1, 2], "series": {"weights": [90, 30, 1]}}},
               xlabel="flips", log_y=True)
    """

    title: str
    kind: Literal["line", "bar", "points"]
    panels: dict[str, dict[str, Any]]
    xlabel: str = ""
    ylabel: str = ""
    log_y: bool = False
    hlines: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"title": self.title, "kind": self.kind, "panels": self.panels,
                "xlabel": self.xlabel, "ylabel": self.ylabel}


def render_png(figure: Figure) -> bytes:
    """PNG bytes of ``figure`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(figure.panels))
    fig, axes = plt.subplots(1, n, figsize=(max(5.0, 3.2 * n), 3.5), squeeze=False)
    for ax, (name, panel) in zip(axes[0], figure.panels.items()):
        series = panel["series"]
        for i, (label, ys) in enumerate(series.items()):
            xs = panel.get("x") or list(range(len(ys)))
            if figure.kind == "points":
                xs, ys = zip(*sorted(ys)) if ys else ((), ())
                ax.plot(xs, ys, marker="o", markersize=4, label=label)
            elif figure.kind == "bar":
                width = 0.8 / len(series)
                ax.bar([x + i * width for x in xs[:len(ys)]], ys, width=width, label=label)
            else:
                ax.plot(xs[:len(ys)], ys, marker="o", markersize=3, label=label)
        for label, y in figure.hlines.items():
            ax.axhline(y, color="gray", linestyle="--", label=label)
        if figure.log_y:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(figure.xlabel)
        ax.set_ylabel(figure.ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1 or figure.hlines:
            ax.legend(fontsize=7)
    fig.suptitle(figure.title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
