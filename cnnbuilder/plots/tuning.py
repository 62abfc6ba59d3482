"""tuning.png: what a search found, at a glance.

One panel per tuned value (score against the value) and one panel of score against the
parameter count, so a trade-off such as DenseNet's growth rate against depth is visible:
completed trials are dots, the best one a star; skipped and failed trials are crosses on
the lower edge of the panels (their values were tried, they have no score).

Pure matplotlib over the tuning.json content (a Figure of its own: no pyplot state, no
backend switch), no TensorFlow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure


def _flatten(hyperparameters: dict) -> dict:
    """{"depth": 40, "training": {"learning_rate": 0.1}} -> {"depth": 40, "training.learning_rate": 0.1}."""
    flat = {}
    for key, value in (hyperparameters or {}).items():
        if key == "training" and isinstance(value, dict):
            flat.update({f"training.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _log_keys(space: dict) -> set:
    keys = set()
    for key, spec in _flatten(space or {}).items():
        if isinstance(spec, dict) and spec.get("log"):
            keys.add(key)
    return keys


def tuned_keys(result: dict) -> list[str]:
    """The tuned values, in the order of the search space (then any others found)."""
    keys = list(_flatten(result.get("space") or {}))
    for trial in result.get("trials", []):
        keys += [k for k in _flatten(trial.get("hyperparameters")) if k not in keys]
    return keys


def plot_tuning(result: dict, path, *, title: str | None = None) -> Path:
    """Draw `result` (the tuning.json content) to `path` (a .png)."""
    trials = result.get("trials", [])
    objective = result.get("objective", "score")
    keys = tuned_keys(result)
    logs = _log_keys(result.get("space"))
    panels = keys + ["params"]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), constrained_layout=True)
    axes = figure.subplots(rows, columns, squeeze=False)
    flat_axes = [a for row in axes for a in row]
    done = [t for t in trials if t.get("status") == "completed" and _is_number(t.get("score"))]
    others = [t for t in trials if t not in done]
    best_id = (result.get("best") or {}).get("trial_id")
    scores = [t["score"] for t in done]
    low = min(scores) if scores else 0.0
    high = max(scores) if scores else 1.0
    margin = (high - low) * 0.08 or 0.05
    floor = low - margin

    for axis, key in zip(flat_axes, panels):
        def value_of(trial):
            if key == "params":
                return trial.get("params")
            return _flatten(trial.get("hyperparameters")).get(key)

        values = [value_of(t) for t in trials]
        numeric = all(_is_number(v) for v in values if v is not None)
        if numeric:
            position = {id(t): value_of(t) for t in trials}
        else:  # lists, booleans, strings: one column per distinct value
            labels = []
            for v in values:
                text = json.dumps(v) if not isinstance(v, str) else v
                if text not in labels:
                    labels.append(text)
            index = {label: i for i, label in enumerate(labels)}
            position = {id(t): index[json.dumps(value_of(t)) if not isinstance(value_of(t), str)
                                      else value_of(t)] for t in trials}
            axis.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
        xs = [position[id(t)] for t in done if position[id(t)] is not None]
        ys = [t["score"] for t in done if position[id(t)] is not None]
        axis.scatter(xs, ys, s=28, color="tab:blue", label="completed", zorder=3)
        for status, color in (("skipped", "tab:gray"), ("failed", "tab:red")):
            marks = [position[id(t)] for t in others if t.get("status") == status and position[id(t)] is not None]
            if marks:
                axis.scatter(marks, [floor] * len(marks), marker="x", s=30, color=color,
                             label=status, zorder=3)
        best = next((t for t in done if t.get("trial_id") == best_id), None)
        if best is not None and position[id(best)] is not None:
            axis.scatter([position[id(best)]], [best["score"]], marker="*", s=220, color="tab:orange",
                         edgecolor="black", label="best", zorder=4)
        if numeric and (key in logs or (key == "params" and _spans_decades(xs))):
            axis.set_xscale("log")
        axis.set_xlabel("parameters" if key == "params" else key)
        axis.set_ylabel(objective)
        axis.grid(alpha=0.3)
        if done or others:
            axis.set_ylim(floor - margin, high + margin)
    for axis in flat_axes[len(panels):]:
        axis.axis("off")
    handles, labels = flat_axes[len(panels) - 1].get_legend_handles_labels()
    if handles:
        flat_axes[len(panels) - 1].legend(handles, labels, fontsize="small")
    counts = {}
    for t in trials:
        counts[t.get("status")] = counts.get(t.get("status"), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    heading = title or f"{result.get('recipe', '')}: {result.get('tuner', '')} search, {summary}"
    figure.suptitle(heading)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def _spans_decades(values) -> bool:
    positive = [v for v in values if _is_number(v) and v > 0]
    return bool(positive) and max(positive) / min(positive) >= 30


__all__ = ["plot_tuning", "tuned_keys"]
