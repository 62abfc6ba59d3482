"""tuning.png: what a search found, at a glance.

One panel per tuned value (score against the value) and one panel of score against the
parameter count, so a trade-off such as DenseNet's growth rate against depth is visible:
completed trials are dots, the best one a star. Skipped and failed trials have no score,
so they are never drawn on the score axis: each panel has a strip below it, labelled
"skipped" and "failed", with a cross at each value such a trial tried.

Pure matplotlib over the tuning.json content (a Figure of its own: no pyplot state, no
backend switch), no TensorFlow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

UNSCORED = ("skipped", "failed")  # the rows of the strip, top to bottom
COLORS = {"skipped": "tab:gray", "failed": "tab:red"}


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
    return {key for key, spec in _flatten(space or {}).items()
            if isinstance(spec, dict) and spec.get("log")}


def tuned_keys(result: dict) -> list[str]:
    """The tuned values, in the order of the search space (then any others found)."""
    keys = list(_flatten(result.get("space") or {}))
    for trial in result.get("trials", []):
        keys += [k for k in _flatten(trial.get("hyperparameters")) if k not in keys]
    return keys


def _value(trial: dict, key: str):
    if key == "params":
        return trial.get("params")
    return _flatten(trial.get("hyperparameters")).get(key)


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def is_scored(trial: dict) -> bool:
    """Whether a trial has a score to plot (completed, with a finite score)."""
    return trial.get("status") == "completed" and _is_number(trial.get("score"))


def panel_points(trials: list[dict], key: str) -> dict:
    """What the panel of `key` draws.

    Returns:
        ``{"scored": [(x, score, trial_id)...], "skipped": [x...], "failed": [x...],
        "ticks": [labels] or None}``: x is the value (or, for lists, booleans and strings,
        the index of its label in ``ticks``); trials without the value are left out.
    """
    values = [_value(t, key) for t in trials]
    ticks = None
    if not all(_is_number(v) for v in values if v is not None):
        ticks = list(dict.fromkeys(_label(v) for v in values if v is not None))
    points = {"scored": [], "ticks": ticks, **{status: [] for status in UNSCORED}}
    for trial, value in zip(trials, values):
        if value is None:
            continue
        x = ticks.index(_label(value)) if ticks is not None else value
        if is_scored(trial):
            points["scored"].append((x, trial["score"], trial.get("trial_id")))
        elif trial.get("status") in UNSCORED:
            points[trial["status"]].append(x)
    return points


def plot_tuning(result: dict, path, *, title: str | None = None) -> Path:
    """Draw `result` (the tuning.json content) to `path` (a .png)."""
    trials = result.get("trials", [])
    objective = result.get("objective", "score")
    logs = _log_keys(result.get("space"))
    panels = tuned_keys(result) + ["params"]
    unscored = any(t.get("status") in UNSCORED for t in trials)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.2 * columns, (4.1 if unscored else 3.4) * rows),
                    constrained_layout=True)
    grid = figure.add_gridspec(rows * 2, columns, height_ratios=[4, 1 if unscored else 0.001] * rows)
    scores = [t["score"] for t in trials if is_scored(t)]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    margin = (high - low) * 0.08 or 0.05
    best_id = (result.get("best") or {}).get("trial_id")
    legend = {}  # label -> handle, over all panels
    first = None
    for index, key in enumerate(panels):
        row, column = divmod(index, columns)
        axis = figure.add_subplot(grid[2 * row, column])
        points = panel_points(trials, key)
        xs = [x for x, _, _ in points["scored"]]
        axis.scatter(xs, [y for _, y, _ in points["scored"]], s=28, color="tab:blue",
                     label="completed", zorder=3)
        best = [(x, y) for x, y, trial_id in points["scored"] if trial_id == best_id]
        if best:
            axis.scatter(*zip(*best), marker="*", s=220, color="tab:orange", edgecolor="black",
                         label="best", zorder=4)
        axis.set_ylabel(objective)
        axis.set_ylim(low - margin, high + margin)
        axis.grid(alpha=0.3)
        target = axis
        if unscored:  # the strip of trials without a score, sharing the panel's x axis
            target = figure.add_subplot(grid[2 * row + 1, column], sharex=axis)
            for level, status in enumerate(reversed(UNSCORED)):
                marks = points[status]
                if not marks:
                    continue
                target.scatter(marks, [level] * len(marks), marker="x", s=30,
                               color=COLORS[status], label=f"{status} (no score)", zorder=3)
            target.set_yticks(range(len(UNSCORED)), list(reversed(UNSCORED)))
            target.set_ylim(-0.6, len(UNSCORED) - 0.4)
            target.grid(alpha=0.3, axis="x")
            axis.tick_params(labelbottom=False)
        if points["ticks"] is not None:
            target.set_xticks(range(len(points["ticks"])), points["ticks"],
                              rotation=20 if len(points["ticks"]) > 3 else 0)
        elif key in logs or (key == "params" and _spans_decades(xs)):
            axis.set_xscale("log")
        elif all(isinstance(x, int) for x in xs + points["skipped"] + points["failed"]):
            target.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "params" and not _spans_decades(xs):
            target.xaxis.set_major_locator(MaxNLocator(nbins=5))
            target.xaxis.set_major_formatter(EngFormatter(sep=""))  # 25k, not 25000
        target.set_xlabel("parameters" if key == "params" else key)
        for drawn in dict.fromkeys((axis, target)):
            handles, labels = drawn.get_legend_handles_labels()
            legend.update((label, handle) for handle, label in zip(handles, labels)
                          if label not in legend)
        first = first or axis
    if legend:
        first.legend(list(legend.values()), list(legend), fontsize="small")
    counts = {}
    for t in trials:
        counts[t.get("status")] = counts.get(t.get("status"), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    figure.suptitle(title or f"{result.get('recipe', '')}: {result.get('tuner', '')} search, {summary}")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def _spans_decades(values) -> bool:
    positive = [v for v in values if _is_number(v) and v > 0]
    return bool(positive) and max(positive) / min(positive) >= 30


__all__ = ["panel_points", "plot_tuning", "tuned_keys"]
