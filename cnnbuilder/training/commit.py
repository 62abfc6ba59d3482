"""Per-epoch commits of a training run directory (what a resume reads back is
`cnnbuilder.runs`'s).

Each finished epoch is committed in one step: the best model (when the validation
accuracy improved) and the resume checkpoint are staged under ``resume/``, the history is
rewritten, then ``state.json`` is replaced atomically - the commit point. Whatever moment
the process dies at, a rerun finds the last committed epoch, its checkpoint and a history
holding each finished epoch exactly once.

With a moving average of the weights (``ema``), the best model is saved with the averaged
weights (those validation scored) and the resume checkpoint with the trained ones and the
averages in its optimizer, so a resumed run continues both exactly.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import keras
import numpy as np

from cnnbuilder import runs
from cnnbuilder.training.distribution import local_only


def score_of(row: dict) -> float | None:
    """The validation score an epoch is judged by: its mean IoU where the run measures one
    (segmentation), else its accuracy; None without a validation pass."""
    for key in ("val_mean_iou", "val_accuracy"):
        if row.get(key) not in (None, ""):
            return float(row[key])
    return None


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the highest validation score (`score_of`; the first of equals)."""
    scored = [(score_of(r), int(r["epoch"])) for r in history if score_of(r) is not None]
    return max(scored, key=lambda s: (s[0], -s[1]))[1] if scored else None


@contextlib.contextmanager
def averaged_weights(model):
    """Within it, `model`'s trainable weights are its optimizer's moving averages (when it
    keeps them: ``ema``), restored after; the averages themselves are left unchanged."""
    optimizer = getattr(model, "optimizer", None)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    variables = optimizer._trainable_variables
    trained = [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]
    for variable, average in zip(variables, averages):
        if average is not None:
            variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(variables, trained):
            variable.assign(value)


class EpochCommit(keras.callbacks.Callback):
    """Commits each finished epoch: best model, resume checkpoint, history, then state."""

    def __init__(self, directory: Path, state: dict):
        super().__init__()
        self.directory = Path(directory)
        self.resume = self.directory / runs.RESUME_DIR
        self.state = dict(state)
        history = runs.read_history(self.directory / runs.HISTORY_CSV)
        self.history = history[: self.state["epochs_done"]]
        self.epoch_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        number = epoch + 1
        seconds = time.perf_counter() - self.epoch_started
        rate = self.model.optimizer.learning_rate
        row = {"epoch": number, **{k: float(v) for k, v in sorted(logs.items())},
               "learning_rate": float(np.asarray(rate)), "seconds": round(seconds, 3)}
        score = score_of(logs)
        state = dict(self.state)
        improved = score is not None and (state["best"] is None or score > state["best"])
        checkpoint = f"epoch-{number}.keras"
        with local_only():  # process 0 alone saves (see distribution.local_only)
            if improved:
                with averaged_weights(self.model):
                    runs.atomic_save_model(self.model, self.resume / f"best-{number}.keras")
            runs.atomic_save_model(self.model, self.resume / checkpoint)
        if improved:
            state.update(best=float(score), best_epoch=number)
        history = self.history + [row]
        runs.atomic_write_text(self.directory / runs.HISTORY_CSV, runs.history_csv(history))
        state.update(epochs_done=number, checkpoint=checkpoint,
                     seconds=round(state.get("seconds", 0.0) + seconds, 3))
        runs.atomic_write_json(self.directory / runs.STATE, state)  # the commit point
        if improved:
            runs.finish_promotion(self.directory, state)
        for old in self.resume.glob("epoch-*.keras"):
            if old.name != checkpoint:
                old.unlink(missing_ok=True)
        self.state, self.history = state, history
