"""Per-epoch commits of a training run directory, and what a resume reads back.

Each finished epoch is committed in one step: the best model (when the validation
accuracy improved) and the resume checkpoint are staged under ``resume/``, the history is
rewritten, then ``state.json`` is replaced atomically - the commit point. Whatever moment
the process dies at, a rerun finds the last committed epoch, its checkpoint and a history
holding each finished epoch exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from cnnbuilder.errors import RunError
from cnnbuilder.training import rundir

# What a user can do about a damaged run directory: never a silent restart that loses epochs.
RECOVER = ("restore it from a backup, or pass --overwrite to start the run over (its "
           "finished epochs are lost).")


def fresh_state() -> dict:
    """The state of a run that has not finished an epoch yet."""
    return {"epochs_done": 0, "best": None, "best_epoch": None, "checkpoint": None, "seconds": 0.0}


def _state_problem(state: dict, directory: Path) -> str | None:
    """What is wrong with a state.json (hand-edited, or written by something else)."""
    done = state.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        return f"epochs_done is {done!r}, not a count of epochs"
    for key, kinds in (("best", (int, float)), ("best_epoch", (int,)), ("seconds", (int, float))):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return f"{key} is {value!r}"
    if done:
        checkpoint = state.get("checkpoint")
        if not isinstance(checkpoint, str) or not (directory / rundir.RESUME_DIR / checkpoint).is_file():
            return (f"the checkpoint of epoch {done} ({rundir.RESUME_DIR}/{checkpoint}) is "
                    "missing")
        rows = len(rundir.read_history(directory / rundir.HISTORY_CSV))
        if rows < done:
            return f"{rundir.HISTORY_CSV} holds {rows} of the {done} finished epochs"
    return None


def check_resumable(directory: Path) -> None:
    """RunError, saying how to recover, when an unfinished run directory is damaged: an
    unreadable or inconsistent state.json, progress without state.json, state without
    run.json. Called before anything is written, so nothing more is lost."""
    directory = Path(directory)
    if not directory.is_dir() or (directory / rundir.METRICS).exists():
        return  # nothing to resume, or a finished run (refused or replaced elsewhere)
    state = rundir.read_json(directory / rundir.STATE, what="training state", hint=RECOVER)
    record = rundir.read_json(directory / rundir.RUN, what="run record", hint=RECOVER)
    if state is None:
        rows = len(rundir.read_history(directory / rundir.HISTORY_CSV))
        checkpoints = sorted((directory / rundir.RESUME_DIR).glob("*.keras"))
        if rows or checkpoints:
            raise RunError(
                f"{directory} holds {rows} finished epoch(s) in {rundir.HISTORY_CSV} and "
                f"{len(checkpoints)} checkpoint(s) in {rundir.RESUME_DIR}/ but no "
                f"{rundir.STATE}, so it cannot tell where the run stopped; " + RECOVER)
        return
    problem = _state_problem(state, directory)
    if problem:
        raise RunError(f"the training state {directory / rundir.STATE} is damaged ({problem}); "
                       + RECOVER)
    if record is None and state.get("epochs_done"):
        raise RunError(f"{directory} holds a {rundir.STATE} but no {rundir.RUN}, so the settings "
                       "of the unfinished run are unknown; " + RECOVER)


def resumable_state(directory: Path) -> dict:
    """The committed state of `directory` (fresh when it has none), with a best-model
    promotion that a kill may have cut short completed."""
    state = rundir.read_json(directory / rundir.STATE, what="training state")
    if not state or not state.get("epochs_done"):
        return fresh_state()
    finish_promotion(directory, state)
    return state


def finish_promotion(directory: Path, state: dict) -> None:
    """Move the staged best model of `state` to model.keras, if it is still staged."""
    staged = directory / rundir.RESUME_DIR / f"best-{state.get('best_epoch')}.keras"
    if staged.exists():
        staged.replace(directory / rundir.MODEL)


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the highest validation accuracy (the first of equals)."""
    scored = [(float(r["val_accuracy"]), int(r["epoch"])) for r in history
              if r.get("val_accuracy") not in (None, "")]
    return max(scored, key=lambda s: (s[0], -s[1]))[1] if scored else None


class EpochCommit(keras.callbacks.Callback):
    """Commits each finished epoch: best model, resume checkpoint, history, then state."""

    def __init__(self, directory: Path, state: dict):
        super().__init__()
        self.directory = Path(directory)
        self.resume = self.directory / rundir.RESUME_DIR
        self.state = dict(state)
        history = rundir.read_history(self.directory / rundir.HISTORY_CSV)
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
        score = logs.get("val_accuracy")
        state = dict(self.state)
        improved = score is not None and (state["best"] is None or score > state["best"])
        if improved:
            rundir.atomic_save_model(self.model, self.resume / f"best-{number}.keras")
            state.update(best=float(score), best_epoch=number)
        checkpoint = f"epoch-{number}.keras"
        rundir.atomic_save_model(self.model, self.resume / checkpoint)
        history = self.history + [row]
        rundir.atomic_write_text(self.directory / rundir.HISTORY_CSV, rundir.history_csv(history))
        state.update(epochs_done=number, checkpoint=checkpoint,
                     seconds=round(state.get("seconds", 0.0) + seconds, 3))
        rundir.atomic_write_json(self.directory / rundir.STATE, state)  # the commit point
        if improved:
            finish_promotion(self.directory, state)
        for old in self.resume.glob("epoch-*.keras"):
            if old.name != checkpoint:
                old.unlink(missing_ok=True)
        self.state, self.history = state, history
