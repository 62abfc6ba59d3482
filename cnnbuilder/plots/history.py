"""Pictures people would rather look at than read: training history, tuning results,
architecture diagrams. Figures drawn straight to files (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

# A Figure of its own, not pyplot: drawing a file must neither need a display nor switch
# the backend of a notebook or application that imported cnnbuilder.
from matplotlib.figure import Figure


def plot_history(rows: list[dict], path, *, title: str = "") -> Path:
    """Loss and accuracy (mean IoU for a segmentation run) per epoch, training against
    validation."""
    epochs = [int(r["epoch"]) for r in rows]
    figure = Figure(figsize=(10, 4), constrained_layout=True)
    axes = figure.subplots(1, 2)
    score = "mean_iou" if any("mean_iou" in r for r in rows) else "accuracy"
    for axis, metric in zip(axes, ("loss", score)):
        for prefix, label, style in (("", "training", "-"), ("val_", "validation", "--")):
            key = prefix + metric
            values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
            if values:
                axis.plot(epochs[: len(values)], values, style, marker="o", markersize=3, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
