"""`RecipeTuner`: the `keras_tuner.Tuner` that runs a `HyperRecipe` trial.

`run_trial` (KerasTuner's public hook) seeds the trial, builds and trains it through the
hypermodel (that is, through the training engine), keeps the best epoch's weights in
``search/trial_*/checkpoint.weights.h5``, and writes cnnbuilder's record of the outcome
beside KerasTuner's trial.json (``cnnbuilder_trial.json``: status, score, parameter count,
seconds, memory, reason, and the traceback of a failed trial). A skipped trial
(`TrialSkipped`) and a failed one (any other exception) become KerasTuner's
`FailedTrialError`, so the oracle records them without retrying and the search goes on.
Each trial's traced graphs are released when it ends (`tf_graphs.released_graphs`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
import warnings
from pathlib import Path

import keras
import keras_tuner as kt

from cnnbuilder.errors import TrialSkipped
from cnnbuilder import runs
from cnnbuilder.tuning import chief, keras_tuner_hooks as hooks
from cnnbuilder.tuning.oracles import SKIPPED
from cnnbuilder.tuning.tf_graphs import released_graphs

TRIAL_RECORD = "cnnbuilder_trial.json"  # inside each trial_* directory
CHECKPOINT = "checkpoint.weights.h5"  # the best epoch's weights, inside each trial_* directory


class BestEpochWeights(keras.callbacks.Callback):
    """Saves the model's weights at each epoch that improves the objective."""

    def __init__(self, objective: kt.Objective, path: Path):
        super().__init__()
        self.objective, self.path, self.best = objective, Path(path), None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective.name)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or self.objective.better_than(value, self.best):
            self.best = value
            runs.atomic_save_weights(self.model, self.path)  # a kill never leaves half a file


class RecipeTuner(hooks.TunerHooks):
    """Runs `HyperRecipe` trials: seeded, in a fresh Keras session, timed, recorded.

    Args:
        seed: of Keras' initialisers for every trial.
        trial_timeout: seconds of silence after which the chief gives up on a worker's
            trial (workers send heartbeats five times as often).
        fit_verbose: `model.fit`'s verbose of the trials.
        quiet: print nothing (the one-line messages of skipped and failed trials too).
        tensorboard: log every trial to ``DIRECTORY/logs/<trial_id>/execution0`` with its
            hyperparameters, for TensorBoard's HParams dashboard (``tensorboard --logdir
            DIRECTORY/logs``).
        Other arguments are `keras_tuner.Tuner`'s.
    """

    def __init__(self, *args, seed=0, trial_timeout=chief.DEFAULT_TRIAL_TIMEOUT, fit_verbose=0,
                 quiet=False, tensorboard=True, **kwargs):
        self.seed = seed
        self.tensorboard = tensorboard
        self.trial_timeout = trial_timeout
        self.fit_verbose = fit_verbose
        self.quiet = quiet
        self._asking = False
        self.records: list[dict] = []  # the trials this process ran
        super().__init__(*args, **kwargs)

    def search(self, *fit_args, **fit_kwargs):
        """Run trials until the oracle stops; on the chief, serve the oracle instead."""
        if chief.role() == "chief":
            self.oracle.verbose = fit_kwargs.get("verbose", 1)
            self.save()
            chief.serve(self.oracle)
            return
        super().search(*fit_args, **fit_kwargs)

    def pre_create_trial(self):
        # Called again without a trial in between: the oracle answered IDLE (it waits for
        # other workers' trials); ask again a little later rather than spin.
        if self._asking:
            time.sleep(1.0)
        self._asking = True

    def on_trial_begin(self, trial):
        self._asking = False
        super().on_trial_begin(trial)

    def on_invalid_trial(self, trial) -> None:
        if not self.quiet:
            super().on_invalid_trial(trial)

    def checkpoint_path(self, trial_id) -> Path:
        """The best epoch's weights of a trial."""
        return Path(self.get_trial_dir(trial_id)) / CHECKPOINT

    @property
    def log_dir(self) -> Path:
        """Where the trials' TensorBoard runs go: ``logs/`` of the search directory."""
        return Path(self.directory) / runs.LOGS_DIR

    def record_path(self, trial_id) -> Path:
        """cnnbuilder's record of a trial (`TRIAL_RECORD`)."""
        return Path(self.get_trial_dir(trial_id)) / TRIAL_RECORD

    def run_trial(self, trial, data, *, epochs, **kwargs):
        """Build, train and score one trial; returns the best epoch's metrics."""
        hp = trial.hyperparameters
        hyper = self.hypermodel
        record = {"trial_id": trial.trial_id, "number": hooks.trial_number(trial.trial_id),
                  "tuner_id": self.tuner_id, "hyperparameters": hyper.hyperparameters(hp),
                  "status": None, "score": None, "params": None, "seconds": None}
        started = time.perf_counter()
        heartbeat = (chief.Heartbeat(self.oracle, trial.trial_id,
                                     chief.heartbeat_interval(self.trial_timeout),
                                     progress_timeout=self.trial_timeout)
                     if chief.role() == "worker" else None)
        try:
            with heartbeat or contextlib.nullcontext(), released_graphs():
                reason = hyper.check(*hyper.values(hp))
                if reason is not None:  # before anything is built
                    raise TrialSkipped(reason)
                progress = [chief.Progress(heartbeat)] if heartbeat else []
                metrics = self._fit_trial(trial, data, epochs, record, progress)
        except TrialSkipped as exc:
            record.update(status="skipped", reason=exc.reason)
            if exc.params is not None:
                record["params"] = exc.params
            # The oracle tells a skipped trial from a failed one by this mark (`SKIPPED`).
            raise kt.errors.FailedTrialError(SKIPPED + exc.reason) from None
        except Exception as exc:  # out of memory, a broken combination, a diverged loss...
            record.update(status="failed", reason=_short(exc), traceback=traceback.format_exc())
            raise kt.errors.FailedTrialError(record["reason"]) from None
        finally:
            record["seconds"] = round(time.perf_counter() - started, 2)
            record["memory_mb"] = _rss_mb()
            if record["status"] is not None:  # skipped or failed (not interrupted)
                self.write_record(record)
        name = self.oracle.objective.name
        if not math.isfinite(metrics.get(name, float("nan"))):
            record.update(status="failed",
                          reason=f"training diverged: {name} is {metrics.get(name)}")
            self.write_record(record)
            raise kt.errors.FailedTrialError(record["reason"])
        record.update(status="completed", score=float(metrics[name]))
        self.write_record(record)
        return {**metrics, "params": float(record["params"]), "seconds": record["seconds"]}

    def _fit_trial(self, trial, data, epochs, record, callbacks=()) -> dict:
        """Build, train and checkpoint one trial; returns the best epoch's metrics (plain
        floats: nothing of the trial's graphs outlives this call)."""
        hp = trial.hyperparameters
        keras.backend.clear_session()  # whatever the process built before
        keras.utils.set_random_seed(self.seed)
        model = self.hypermodel.build(hp)
        record["params"] = int(model.count_params())
        first, last, previous = 0, epochs, None
        # Hyperband's bracket of this trial (the keys are documented in HyperbandOracle).
        if "tuner/epochs" in hp.values:
            first, last = int(hp.values["tuner/initial_epoch"]), int(hp.values["tuner/epochs"])
            previous = hp.values.get("tuner/trial_id")
        if previous:
            load_weights(model, self.checkpoint_path(previous))
        record["epochs"] = last
        checkpoint = BestEpochWeights(self.oracle.objective, self.checkpoint_path(trial.trial_id))
        if self.tensorboard:
            callbacks = [*callbacks, *hooks.trial_tensorboard(self, trial, self.log_dir)]
        history = self.hypermodel.fit(hp, model, data, epochs=last, initial_epoch=first,
                                      callbacks=[checkpoint, *callbacks],
                                      verbose=self.fit_verbose)
        return best_epoch_metrics(history.history, self.oracle.objective)

    def write_record(self, record: dict) -> None:
        """Write a trial's record (and say in one line why a trial did not complete)."""
        # A skipped trial is told by the oracle's display (`oracles.SearchDisplay`), which
        # runs on the chief: a worker tells its own.
        told_here = record["status"] == "failed" or (
            record["status"] == "skipped" and chief.role() == "worker")
        if told_here and not self.quiet:
            print(f"Trial {record['number']} {record['status']}: {record['reason']}")
        runs.atomic_write_json(self.record_path(record["trial_id"]), record)
        self.records = [r for r in self.records if r["trial_id"] != record["trial_id"]]
        self.records.append(dict(record))


def load_weights(model, path) -> None:
    """The weights of a checkpoint (its optimizer state, if any, is not wanted here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(path)


def best_epoch_metrics(history: dict, objective: kt.Objective) -> dict:
    """The logged metrics of the epoch with the best objective value."""
    values = history.get(objective.name) or []
    if not values:
        raise RuntimeError(f"model.fit did not log {objective.name!r} (logged: {sorted(history)}).")
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        index = len(values) - 1
    else:
        index = (max if objective.direction == "max" else min)(finite)[1]
    return {k: float(v[index]) for k, v in history.items() if len(v) > index}


def _rss_mb() -> float | None:
    """Resident memory of this process (Linux /proc), in MiB."""
    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            pages = int(stream.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
