"""Hyperparameter search with KerasTuner over the `tune:` section of a recipe.

`HyperRecipe` is a `keras_tuner.HyperModel`: it declares the recipe's search space
(`cnnbuilder.recipe.search_space`), and builds and compiles the recipe's network for one set of
values. `tune()` runs a whole search into an output directory::

    DIR/tuning.json        every trial (trial_id, hyperparameters, status, score, params,
                           seconds, reason) and the best one; written when the search ends
    DIR/tuning.png         score against each tuned value and against the parameter count
    DIR/best/              the best trial's model.keras, run.json and metrics.json (a run
                           directory that `cnnbuilder export` accepts)
    DIR/best_retrained/    with retrain_epochs=N: the best configuration trained again for N
                           epochs by `cnnbuilder.train` (a full, resumable training run)
    DIR/search.log         one line per trial start and end (the oracle's view)
    DIR/search/            KerasTuner's project: oracle state, trial_*/trial.json, the best
                           epoch's weights of each trial (checkpoint.weights.h5) and
                           cnnbuilder's record of it (cnnbuilder_trial.json, with the
                           traceback of a failed trial)

Trials are *completed*, *skipped* (never trained: the recipe rejects the combination, or
the model is over --max-params) or *failed* (an exception such as out-of-memory, a
diverged loss, or a worker that stopped answering); the search goes on after each.

Each trial runs in a fresh Keras session and its traced graphs are released when it ends
(see `_release_trial_graphs`), so a long search in one process keeps a flat memory.

Rerunning the same call continues an interrupted search (KerasTuner reloads its oracle;
finished trials are not run again). A finished search (tuning.json) is only replaced with
``overwrite=True``.

Distributed search: the same call (or `cnnbuilder tune` command) under KerasTuner's
environment, ``KERASTUNER_TUNER_ID=chief`` on one machine and ``tuner0``, ``tuner1``...
on the others, with ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` naming the chief
and DIR on a file system all of them share. The chief runs the oracle and writes the
results; workers train. Workers send a heartbeat while they run a trial; a trial whose
worker is silent for `trial_timeout` seconds (``CNNBUILDER_TRIAL_TIMEOUT``, default 600)
is given to another worker once, then recorded as failed, so a dead machine never stalls
the search. See docs/distributed_tuning.md.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
import os
import shutil
import threading
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine import tuner_utils

from cnnbuilder.training import rundir as runs
from cnnbuilder.data.datasets import Dataset, load_dataset, make_pipeline, split_size
from cnnbuilder.errors import CnnBuilderError, DataError, RecipeError, RunError
from cnnbuilder.recipe.training import TrainingConfig, training_config
from cnnbuilder.recipe.search_space import FORMS, SearchSpace, check_reachable, recipe_space
from cnnbuilder.zoo import load_recipe

TUNERS = ("random", "bayesian", "hyperband")
# Metrics `model.fit` logs (cnnbuilder compiles with an accuracy metric), and their direction.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}

TUNING_JSON = "tuning.json"
TUNING_PNG = "tuning.png"
BEST_DIR = "best"
RETRAINED_DIR = "best_retrained"
SEARCH_DIR = "search"  # KerasTuner's project directory
SEARCH_LOG = "search.log"
SETTINGS = "settings.json"  # inside SEARCH_DIR: what a rerun must match to resume
TRIAL_RECORD = "cnnbuilder_trial.json"  # inside each trial_* directory

TIMEOUT_ENV = "CNNBUILDER_TRIAL_TIMEOUT"
DEFAULT_TRIAL_TIMEOUT = 600.0
# A trial lost with its worker is handed to another worker this many times.
LOST_TRIAL_RETRIES = 1


class TuningError(CnnBuilderError, ValueError):
    """A tuning argument is invalid (tuner, objective, trial counts...)."""


class TrialSkipped(kt.errors.FailedTrialError):
    """A trial that is never trained: the recipe rejects its values, or it is over budget."""

    def __init__(self, reason: str, params: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.params = params


# ----------------------------------------------------------------------------- HyperModel


class HyperRecipe(kt.HyperModel):
    """A recipe's search space as a `keras_tuner.HyperModel`.

    Args:
        recipe: a shipped name, a .yaml path, a dict or a `Recipe`.
        input_shape, classes: of the networks built (default: the recipe's).
        space: a search space in the `tune:` syntax, instead of the recipe's own section.
        params: recipe params held fixed (removed from the space when it tunes them).
        training: training settings held fixed (e.g. ``{"batch_size": 64}``), over the
            recipe's `training:` section; removed from the space when it tunes them.
        epochs: epochs of a trial (its learning-rate schedule spans them); default: the
            recipe's `training.epochs`.
        max_params: a model with more parameters is skipped (`TrialSkipped`) before it
            is compiled or trained.
        augment: augmentations of the training split (default: the dataset's rule used by
            `cnnbuilder.train`, else the recipe's `training.augment`).

    `build(hp)` returns a compiled model; it raises `TrialSkipped` (a KerasTuner
    `FailedTrialError`, so the trial is recorded as failed without retries) when the
    recipe rejects the values. `fit(hp, model, data, ...)` accepts a
    `cnnbuilder.data.datasets.Dataset` (batch size and augmentation come from the trial) or what
    `model.fit` accepts.
    """

    def __init__(self, recipe, input_shape=None, classes=None, *, space=None, params=None,
                 training=None, epochs=None, max_params=None, augment=None, name=None,
                 tunable=True):
        source, self.recipe = recipe, load_recipe(recipe)
        super().__init__(name=name or self.recipe.name, tunable=tunable)
        self.input_shape = tuple(input_shape) if input_shape is not None else self.recipe.default_input_shape
        self.classes = int(classes) if classes is not None else self.recipe.default_classes
        self.fixed_params = dict(params or {})
        self.fixed_training = {k: v for k, v in (training or {}).items() if v is not None}
        declared = self.recipe.document.data.get("params") or {}
        unknown = [k for k in self.fixed_params if k not in declared]
        if unknown:
            from cnnbuilder.recipe.vocabulary import did_you_mean

            raise RecipeError(
                f"{self.recipe.name} has no param {unknown[0]!r} (its params: "
                f"{', '.join(sorted(declared)) or 'none'})." + did_you_mean(unknown[0], declared)
            )
        # Checks the fixed settings (and the recipe's own section) now.
        base = training_config(self.recipe.training, where=f"training settings of {self.recipe.name}",
                               **self.fixed_training)
        self.epochs = int(epochs) if epochs is not None else base.epochs
        self.max_params = max_params
        self.augment = augment
        self.full_space = recipe_space(source, space)
        self.space: SearchSpace = self.full_space.without(self.fixed_params, self.fixed_training)
        check_reachable(self.space, self.check)

    # -- values

    def declare_hyperparameters(self, hp) -> dict:
        """Register every dimension in `hp`; returns the values `hp` holds for them."""
        values = {}
        for dimension in self.space:
            method, kwargs = dimension.keras_tuner()
            values[dimension.key] = getattr(hp, method)(**kwargs)
        return values

    def values(self, hp) -> tuple[dict, dict]:
        """(recipe params, training settings) of one trial, decoded, fixed ones included."""
        params, training = self.space.split(self.declare_hyperparameters(hp))
        return {**self.fixed_params, **params}, {**self.fixed_training, **training}

    def hyperparameters(self, hp_or_values) -> dict:
        """The tuned values as the recipe writes them (params, then a `training` map)."""
        values = getattr(hp_or_values, "values", hp_or_values)
        return self.space.hyperparameters(values)

    def training_config(self, training: dict | None = None) -> TrainingConfig:
        settings = {**self.fixed_training, **(training or {}), "epochs": self.epochs}
        return training_config(self.recipe.training, where=f"training settings of {self.recipe.name}",
                               **settings)

    def check(self, params: dict, training: dict | None = None) -> str | None:
        """None when the values give a valid network and settings, else the recipe's reason."""
        try:
            self.recipe.plan(input_shape=self.input_shape, classes=self.classes,
                             **{**self.fixed_params, **params})
            self.training_config(training)
        except RecipeError as exc:
            return str(exc)
        return None

    # -- HyperModel

    def build(self, hp):
        params, training = self.values(hp)
        reason = self.check(params, training)
        if reason is not None:
            raise TrialSkipped(reason)
        from cnnbuilder.model.builder import build

        model = build(self.recipe, input_shape=self.input_shape, classes=self.classes, **params)
        count = int(model.count_params())
        if self.max_params is not None and count > self.max_params:
            raise TrialSkipped(f"{count:,} parameters, over the budget of {self.max_params:,} "
                               "(max_params)", params=count)
        from cnnbuilder.training.engine import _compile

        _compile(model, self.training_config(training), 1000, False)
        return model

    def fit(self, hp, model, *args, **kwargs):
        params, training = self.values(hp)
        config = self.training_config(training)
        data = args[0] if args else kwargs.pop("x", None)
        seed = kwargs.pop("seed", 0)
        if isinstance(data, Dataset):
            from cnnbuilder.training.engine import DATASET_AUGMENTATION, _compile

            augment = self.augment
            if augment is None:
                augment = training["augment"] if "augment" in training else \
                    DATASET_AUGMENTATION.get(data.name, config.augment)
            common = dict(input_shape=self.input_shape, batch_size=config.batch_size, seed=seed)
            train = make_pipeline(data.train, training=True, augment=list(augment), **common)
            validation = make_pipeline(data.validation, training=False, **common)
            size = split_size(data.train)
            steps = max(1, -(-size // config.batch_size)) if size else 1000
            _compile(model, config, steps, False)  # the schedule over this dataset's steps
            kwargs.setdefault("epochs", config.epochs)
            with warnings.catch_warnings():  # make_pipeline shuffles; fit's shuffle=True is moot
                warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
                return model.fit(train, validation_data=validation, **kwargs)
        if data is not None:
            args = (data, *args[1:])
        if args and not _is_batched(args[0]):
            kwargs.setdefault("batch_size", config.batch_size)
        kwargs.setdefault("epochs", config.epochs)
        return model.fit(*args, **kwargs)


def _is_batched(x) -> bool:
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset) or hasattr(x, "__next__") or isinstance(x, keras.utils.PyDataset)


# ----------------------------------------------------------------------------- oracles


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class _WatchedOracle:
    """Oracle additions: a log of trial starts and ends, heartbeats of the workers, and
    the end of trials whose worker went silent (so a dead worker never stalls the chief).
    Mixed in before a KerasTuner oracle class."""

    def _setup(self, log_path: Path | None, timeout: float) -> None:
        self._log_path = log_path
        self._timeout = timeout
        self._seen: dict[str, float] = {}  # trial_id -> last sign of life of its worker
        self._tuner_seen: dict[str, float] = {}
        self._lost: dict[str, str] = {}  # trial_id -> why it was taken from its worker

    def _log(self, text: str) -> None:
        if getattr(self, "_log_path", None) is None:
            return
        with open(self._log_path, "a", encoding="utf-8") as stream:
            stream.write(f"{_now()} {text}\n")

    def _running_elsewhere(self, tuner_id) -> bool:
        return any(t != tuner_id for t in self.ongoing_trials)

    @kt.synchronized
    def create_trial(self, tuner_id):
        now = time.monotonic()
        self._tuner_seen[tuner_id] = now
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.STOPPED and self._running_elsewhere(tuner_id):
            # Keep the worker until the others finish: a trial lost with its worker is
            # retried by whoever is still there.
            self.tuner_ids.add(tuner_id)
            return trial_module.Trial(self.get_space(), status=trial_module.TrialStatus.IDLE)
        if trial.status == trial_module.TrialStatus.RUNNING:
            self._seen[trial.trial_id] = now
            self._log(f"trial {trial.trial_id} start on {tuner_id}")
        return trial

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._seen[trial_id] = time.monotonic()
        return super().update_trial(trial_id, metrics, step=step)

    def get_trial(self, trial_id):
        # Workers call this as their heartbeat.
        self._seen[trial_id] = time.monotonic()
        return super().get_trial(trial_id)

    @kt.synchronized
    def end_trial(self, trial):
        owners = [t for t, ongoing in self.ongoing_trials.items() if ongoing.trial_id == trial.trial_id]
        if not owners:
            if trial.trial_id in self._retry_queue and trial.status == trial_module.TrialStatus.COMPLETED:
                # Its worker was only cut off (or the chief restarted), and nobody has run
                # it again yet: keep the result rather than train it twice.
                self._retry_queue.remove(trial.trial_id)
                super().end_trial(trial)
                self._log(f"trial {trial.trial_id} late report accepted: end {self.trials[trial.trial_id].status}")
                return
            self._log(f"trial {trial.trial_id} late report ignored (status {trial.status}): "
                      "it was given up on after its worker went silent")
            return
        for owner in owners:
            self._tuner_seen[owner] = time.monotonic()
        super().end_trial(trial)
        self._log(f"trial {trial.trial_id} end {self.trials[trial.trial_id].status}")

    @kt.synchronized
    def expire_lost_trials(self) -> list[str]:
        """End the trials whose worker sent nothing for `timeout` seconds: each is retried
        once on another worker, then recorded as failed. Forgets silent idle workers."""
        now = time.monotonic()
        expired = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            last = self._seen.setdefault(trial.trial_id, now)
            if now - last <= self._timeout:
                continue
            reason = (f"lost: worker {tuner_id} sent no heartbeat for {self._timeout:g} s while "
                      "running it (the process or machine died, or lost the connection)")
            self._lost[trial.trial_id] = reason
            self._log(f"trial {trial.trial_id} {reason}")
            trial.status = trial_module.TrialStatus.INVALID
            trial.message = reason
            self.end_trial(trial)
            self.tuner_ids.discard(tuner_id)
            expired.append(trial.trial_id)
        busy = set(self.ongoing_trials)
        for tuner_id in list(self.tuner_ids):
            last = self._tuner_seen.setdefault(tuner_id, now)
            if tuner_id not in busy and now - last > self._timeout:
                self.tuner_ids.discard(tuner_id)
                self._log(f"worker {tuner_id} forgotten: silent for {self._timeout:g} s")
        return expired

    def lost_reason(self, trial_id) -> str | None:
        return getattr(self, "_lost", {}).get(trial_id)


class _RandomOracle(_WatchedOracle, kt.oracles.RandomSearchOracle):
    pass


class _BayesianOracle(_WatchedOracle, kt.oracles.BayesianOptimizationOracle):
    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        # The Gaussian process may propose values already tried; try new ones instead.
        if response.get("status") == "RUNNING" and self._duplicate(response["values"]):
            values = self._random_values()
            if values is None:
                return {"status": "STOPPED", "values": None}
            response = {"status": "RUNNING", "values": values}
        return response


class _HyperbandOracle(_WatchedOracle, kt.oracles.HyperbandOracle):
    pass


def _make_oracle(tuner: str, *, objective, max_trials: int, epochs: int, seed: int):
    common = dict(objective=kt.Objective(objective, OBJECTIVES[objective]), seed=seed,
                  max_retries_per_trial=LOST_TRIAL_RETRIES,
                  # Skipped and failed trials are part of a search; max_trials bounds it.
                  max_consecutive_failed_trials=None)
    if tuner == "random":
        return _RandomOracle(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return _BayesianOracle(max_trials=max_trials, **common)
    oracle = _HyperbandOracle(max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
    oracle.max_trials = max_trials  # hyperband stops at max_trials too
    return oracle


# ----------------------------------------------------------------------------- the tuner


class _Heartbeat:
    """While a worker runs a trial, tell the chief every `interval` seconds it is alive."""

    def __init__(self, oracle, trial_id, interval: float):
        self.oracle, self.trial_id, self.interval = oracle, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self):
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.oracle.get_trial(self.trial_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        return False


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


class _RecipeTuner(kt.Tuner):
    """Runs a `HyperRecipe` trial: seeded, in a fresh Keras session, timed, with a record
    of the outcome next to KerasTuner's trial.json."""

    def __init__(self, *args, seed=0, trial_timeout=DEFAULT_TRIAL_TIMEOUT, fit_verbose=0,
                 quiet=False, **kwargs):
        self._seed = seed
        self._trial_timeout = trial_timeout
        self._fit_verbose = fit_verbose
        self._quiet = quiet
        self._asking = False
        self.records: list[dict] = []  # the trials this process ran
        super().__init__(*args, **kwargs)

    def _get_tuner_fname(self):
        # One name for the process that owns the oracle, local or chief, so a search begun
        # on one machine resumes (reloads its oracle) under a chief and the other way round.
        name = f"worker_{self.tuner_id}" if self._is_worker() else "tuner"
        return os.path.join(str(self.project_dir), f"{name}.json")

    def _populate_initial_space(self):
        # Declare the space without building a model (KerasTuner's default builds one).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def search(self, *fit_args, **fit_kwargs):
        if dist_utils.is_chief_oracle():
            self.oracle.verbose = fit_kwargs.get("verbose", 1)
            self.save()
            _serve(self.oracle)
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

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        # KerasTuner's version, less the traceback it prints for every failed trial: a
        # skipped or failed trial is reported in one line and keeps its traceback in its
        # record (search/trial_*/cnnbuilder_trial.json).
        try:
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = trial_module.TrialStatus.COMPLETED
        except kt.errors.FailedTrialError as exc:
            trial.status = trial_module.TrialStatus.FAILED
            trial.message = str(exc)
        except kt.errors.FatalError:
            raise
        except Exception:  # reporting to the oracle failed: KerasTuner retries the trial
            trial.status = trial_module.TrialStatus.INVALID
            trial.message = traceback.format_exc()
            if not self._quiet:
                print(trial.message)

    def run_trial(self, trial, data, *, epochs, **kwargs):
        hp = trial.hyperparameters
        hyper: HyperRecipe = self.hypermodel
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                  "hyperparameters": hyper.hyperparameters(hp), "status": None,
                  "score": None, "params": None, "seconds": None}
        started = time.perf_counter()
        heartbeat = (_Heartbeat(self.oracle, trial.trial_id, _heartbeat_interval(self._trial_timeout))
                     if self._is_worker() else contextlib.nullcontext())
        gradients = _custom_gradients()
        try:
            with heartbeat:
                reason = hyper.check(*hyper.values(hp))
                if reason is not None:  # before anything is built
                    raise TrialSkipped(reason)
                metrics = self._fit_trial(trial, data, epochs, record)
        except TrialSkipped as exc:
            record.update(status="skipped", reason=exc.reason)
            if exc.params is not None:
                record["params"] = exc.params
            raise
        except Exception as exc:  # out of memory, a broken combination, a diverged loss...
            record.update(status="failed", reason=_short(exc), traceback=traceback.format_exc())
            raise kt.errors.FailedTrialError(record["reason"]) from None
        finally:
            _release_trial_graphs(gradients)
            record["seconds"] = round(time.perf_counter() - started, 2)
            record["memory_mb"] = _rss_mb()
            if record["status"] is not None:  # skipped or failed (not interrupted)
                self._write_record(trial.trial_id, record)
        name = self.oracle.objective.name
        if not math.isfinite(metrics.get(name, float("nan"))):
            record.update(status="failed", reason=f"training diverged: {name} is {metrics.get(name)}")
            self._write_record(trial.trial_id, record)
            raise kt.errors.FailedTrialError(record["reason"])
        record.update(status="completed", score=float(metrics[name]))
        self._write_record(trial.trial_id, record)
        return {**metrics, "params": float(record["params"]), "seconds": record["seconds"]}

    def _fit_trial(self, trial, data, epochs, record) -> dict:
        """Build, train and checkpoint one trial; returns the best epoch's metrics (plain
        floats: nothing of the trial's graphs outlives this call)."""
        hp = trial.hyperparameters
        hyper: HyperRecipe = self.hypermodel
        keras.backend.clear_session()  # whatever the process built before
        keras.utils.set_random_seed(self._seed)
        model = hyper.build(hp)
        record["params"] = int(model.count_params())
        first, last = 0, epochs
        if "tuner/epochs" in hp.values:  # hyperband
            first, last = int(hp.values["tuner/initial_epoch"]), int(hp.values["tuner/epochs"])
            previous = hp.values.get("tuner/trial_id")
            if previous:
                _load_weights(model, self._get_checkpoint_fname(previous))
        record["epochs"] = last
        checkpoint = tuner_utils.SaveBestEpoch(
            objective=self.oracle.objective, filepath=self._get_checkpoint_fname(trial.trial_id))
        history = hyper.fit(hp, model, data, epochs=last, initial_epoch=first,
                            callbacks=[checkpoint], verbose=self._fit_verbose, seed=self._seed)
        return _best_epoch(history.history, self.oracle.objective)

    def _write_record(self, trial_id, record):
        if record["status"] != "completed" and not self._quiet:
            print(f"Trial {trial_id} {record['status']}: {record['reason']}")
        runs.atomic_write_json(Path(self.get_trial_dir(trial_id)) / TRIAL_RECORD, record)
        self.records = [r for r in self.records if r["trial_id"] != trial_id] + [dict(record)]


def _gradient_registry() -> dict | None:
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return None
    return registry if isinstance(registry, dict) else None


def _custom_gradients() -> frozenset:
    registry = _gradient_registry()
    return frozenset(registry) if registry is not None else frozenset()


def _release_trial_graphs(before: frozenset) -> None:
    """Free what a trial built. `keras.backend.clear_session()` resets Keras, but every
    `tf.custom_gradient` traced in graph mode (Keras' training step uses some) registers
    its gradient function, which holds the whole traced graph, in TensorFlow's global
    gradient registry for ever: about 3 MB per trial of a tiny model, far more for a
    DenseNet. The entries of this trial's graphs are dropped; nothing uses them again."""
    keras.backend.clear_session()
    registry = _gradient_registry()
    if registry is not None:
        for key in [k for k in registry if k not in before and str(k).startswith("CustomGradient")]:
            del registry[key]
    gc.collect()


def _load_weights(model, path) -> None:
    """The weights of a checkpoint (its optimizer state, if any, is not wanted here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(path)


def _heartbeat_interval(timeout: float) -> float:
    return max(0.2, min(10.0, timeout / 5))


def _best_epoch(history: dict, objective) -> dict:
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


def _serve(oracle, poll: float = 0.25) -> None:
    """The chief: serve the oracle to the workers until the search is over, ending the
    trials of workers that went silent (KerasTuner's own loop would wait for them for ever)."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise RunError(f"the chief cannot listen on {address} (KERASTUNER_ORACLE_IP/PORT): "
                       "the port is in use or the address is not one of this machine's.")
    server.start()
    try:
        while True:
            time.sleep(poll)
            oracle.expire_lost_trials()
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                break
    finally:
        server.stop(grace=2)


# ----------------------------------------------------------------------------- tune()


def tune(recipe, *, dataset="digits", output, tuner="random", max_trials=10, epochs=5,
         objective="val_accuracy", max_params=None, batch_size=None, seed=0,
         input_shape=None, classes=None, data_dir=None, retrain_epochs=None,
         overwrite=False, quiet=False, trial_timeout=None, **params) -> dict:
    """Search the recipe's `tune:` space with KerasTuner; returns the tuning.json content.

    `dataset` is what `cnnbuilder.train` accepts. `params` are recipe params held fixed
    (``--set``); `batch_size` fixes the batch size (else the recipe's, or the tuned one).
    Each trial trains `epochs` epochs (hyperband: up to `epochs`) and is scored by the best
    epoch's `objective`. `max_params` skips larger models untrained. `retrain_epochs`
    trains the best configuration again for that many epochs into DIR/best_retrained.
    Under KerasTuner's distributed environment a worker runs trials and returns its own
    records; the chief returns and writes the results (see the module docstring).
    """
    started = time.perf_counter()
    _check_arguments(tuner, max_trials, epochs, objective, max_params, batch_size, retrain_epochs)
    timeout = _trial_timeout(trial_timeout)
    source, recipe = recipe, load_recipe(recipe)
    if not recipe_space(source):
        raise TuningError(
            f"{recipe.name} has no tune: section, so there is nothing to search. Add one "
            f"declaring the params to tune, e.g. growth_rate: {{choice: [12, 24]}} (forms: {FORMS}), "
            "or tune a recipe that has one (the CIFAR DenseNets and ResNets do)."
        )
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir=data_dir)
    if classes is not None and int(classes) != data.num_classes:
        raise DataError(f"classes={classes} but the dataset {data.name} has {data.num_classes} classes.")
    shape = tuple(input_shape) if input_shape is not None else recipe.default_input_shape
    hyper = HyperRecipe(source, shape, data.num_classes, params=params,
                        training={"batch_size": batch_size}, epochs=epochs, max_params=max_params)
    if not hyper.space:
        raise TuningError(f"every value of the tune: section of {recipe.name} is fixed by the "
                          "given params/batch size, so there is nothing to search.")
    directory = Path(output)
    role = _role()
    settings = _settings(hyper, data, tuner, objective, epochs, max_params, seed)
    _prepare_directory(directory, settings, overwrite=overwrite, role=role)

    oracle = _make_oracle(tuner, objective=objective, max_trials=max_trials, epochs=epochs,
                          seed=(seed % (2**31 - 2)) + 1)  # KerasTuner reads seed 0 as "random"
    oracle._setup(directory / SEARCH_LOG if role != "worker" else None, timeout)
    fit_verbose = 0 if quiet else (1 if _isatty() else 2)
    silence = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    with silence, _no_retracing_warnings():
        search = _RecipeTuner(oracle=oracle, hypermodel=hyper, directory=str(directory),
                              project_name=SEARCH_DIR, overwrite=False, seed=seed,
                              trial_timeout=timeout, fit_verbose=fit_verbose, quiet=quiet)
        search.search(data, epochs=epochs, verbose=0 if quiet else 1)
    if role == "worker":
        return {"recipe": recipe.name, "objective": objective, "tuner": tuner, "role": "worker",
                "tuner_id": search.tuner_id, "trials": sorted(search.records, key=lambda r: r["trial_id"]),
                "best": None}

    trials = _records(search, hyper)
    best = _best(trials, objective)
    result = {
        "recipe": recipe.name, "objective": objective, "direction": OBJECTIVES[objective],
        "tuner": tuner, "dataset": data.name, "epochs": epochs, "max_trials": max_trials,
        "max_params": max_params, "seed": seed, "space": hyper.space.to_dict(),
        "fixed": {"params": hyper.fixed_params, "training": hyper.fixed_training},
        "trials": trials, "best": best,
    }
    if best is not None:
        with silence, _no_retracing_warnings():
            result["best_model"] = _save_best(search, hyper, data, best, directory, settings)
            if retrain_epochs:
                result["retrained"] = _retrain(hyper, data, best, directory, retrain_epochs, seed,
                                               overwrite, quiet)
    result["seconds"] = round(time.perf_counter() - started, 2)
    from cnnbuilder.plots.tuning import plot_tuning

    plot_tuning(result, directory / TUNING_PNG)
    runs.atomic_write_json(directory / TUNING_JSON, result)  # the commit point
    keras.backend.clear_session()
    if best is None:
        counts = _counts(trials)
        example = next((t for t in trials if t.get("reason")), None)
        raise RunError(
            f"none of the {len(trials)} trials completed ({counts}), so there is no best model. "
            + (f"Trial {example['trial_id']} was {example['status']}: {example['reason']} " if example else "")
            + f"Every trial is listed in {directory / TUNING_JSON}."
        )
    return result


class _RetracingFilter:
    """Every trial traces new functions on purpose: TensorFlow's "N out of the last M calls
    ... triggered tf.function retracing" warning is a false alarm during a search."""

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _no_retracing_warnings():
    import tensorflow as tf

    logger, dropped = tf.get_logger(), _RetracingFilter()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def _check_arguments(tuner, max_trials, epochs, objective, max_params, batch_size, retrain_epochs):
    from cnnbuilder.recipe.vocabulary import did_you_mean

    if tuner not in TUNERS:
        raise TuningError(f"unknown tuner {tuner!r}; expected one of {', '.join(TUNERS)}."
                          + did_you_mean(str(tuner), TUNERS))
    if objective not in OBJECTIVES:
        raise TuningError(f"unknown objective {objective!r}; expected one of the metrics a trial "
                          f"logs: {', '.join(OBJECTIVES)}." + did_you_mean(str(objective), OBJECTIVES))
    for name, value, required in (("max_trials", max_trials, True), ("epochs", epochs, True),
                                  ("max_params", max_params, False), ("batch_size", batch_size, False),
                                  ("retrain_epochs", retrain_epochs, False)):
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise TuningError(f"{name} must be a positive integer, got {value!r}.")


def _trial_timeout(value) -> float:
    where = "trial_timeout"
    if value is None:
        text = os.environ.get(TIMEOUT_ENV)
        if not text:
            return DEFAULT_TRIAL_TIMEOUT
        where = f"the environment variable {TIMEOUT_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise TuningError(f"{where} must be a number of seconds, got {text!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TuningError(f"{where} must be a positive number of seconds, got {value!r}.")
    return float(value)


def _role() -> str:
    """'chief', 'worker' or 'local' from KerasTuner's environment variables."""
    try:
        if not dist_utils.has_chief_oracle():
            return "local"
    except RuntimeError as exc:  # KERASTUNER_ORACLE_IP without a port or a tuner id
        raise TuningError(f"distributed tuning: {exc}") from None
    return "chief" if dist_utils.is_chief_oracle() else "worker"


def _isatty() -> bool:
    import sys

    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _settings(hyper: HyperRecipe, data: Dataset, tuner, objective, epochs, max_params, seed) -> dict:
    """What must match for a rerun to continue a search rather than start over."""
    return json.loads(json.dumps({
        "recipe": hyper.recipe.name, "space": hyper.space.to_dict(),
        "params": hyper.fixed_params, "training": hyper.fixed_training,
        "input_shape": list(hyper.input_shape), "classes": hyper.classes, "dataset": data.name,
        "tuner": tuner, "objective": objective, "epochs": epochs, "max_params": max_params,
        "seed": seed,
    }, default=runs.plain))


def _prepare_directory(directory: Path, settings: dict, *, overwrite: bool, role: str) -> None:
    """Refuse to clobber a finished search; clear it with overwrite; check a resume."""
    if directory.exists() and not directory.is_dir():
        raise RunError(f"--output {directory} exists and is not a directory.")
    project = directory / SEARCH_DIR
    if role == "worker":
        # Only the chief clears or describes the directory; a worker joins what is there.
        if (directory / TUNING_JSON).exists() and not overwrite:
            raise RunError(f"{directory} already holds a finished search ({TUNING_JSON}); "
                           "this worker has nothing to do. Start the chief with --overwrite "
                           "(and the workers after it) to search again.")
        previous = runs.read_json(project / SETTINGS)
        if previous is not None and previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise RunError(f"this worker's settings ({', '.join(changed)}) differ from the "
                           f"search in {directory}; start every worker with the chief's command.")
        project.mkdir(parents=True, exist_ok=True)
        return
    if overwrite:
        clear_search(directory)
    elif (directory / TUNING_JSON).exists():
        raise RunError(
            f"{directory} already holds a finished search ({TUNING_JSON}). Choose another "
            "--output, or pass --overwrite to replace it."
        )
    else:
        previous = runs.read_json(project / SETTINGS)
        if previous is not None and previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise RunError(
                f"{directory} holds an unfinished search with other settings ({', '.join(changed)} "
                "differ), so it cannot be resumed with these. Rerun the original command to "
                "resume it, choose another --output, or pass --overwrite to start over."
            )
        if previous is None and project.exists() and any(project.iterdir()):
            raise RunError(f"{project} holds files cnnbuilder did not write (no {SETTINGS}); "
                           "choose another --output, or pass --overwrite to start over.")
    project.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(project / SETTINGS, settings)


def clear_search(directory: Path) -> None:
    """Remove what a search writes (and nothing else a user may keep in the directory)."""
    directory = Path(directory)
    for name in (TUNING_JSON, TUNING_PNG, SEARCH_LOG):
        (directory / name).unlink(missing_ok=True)
    for name in (SEARCH_DIR, BEST_DIR, RETRAINED_DIR):
        shutil.rmtree(directory / name, ignore_errors=True)


# ----------------------------------------------------------------------------- results


def _records(search: _RecipeTuner, hyper: HyperRecipe) -> list[dict]:
    """One record per trial, from the oracle (status, score) and the trial's own record."""
    oracle = search.oracle
    out = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        saved = runs.read_json(Path(search.get_trial_dir(trial_id)) / TRIAL_RECORD) or {}
        metrics = trial.metrics
        record = {
            "trial_id": trial_id,
            "hyperparameters": hyper.hyperparameters(trial.hyperparameters),
            "status": None, "score": None,
            "params": saved.get("params"),
            "seconds": saved.get("seconds"),
        }
        if record["params"] is None and metrics.exists("params"):
            record["params"] = int(metrics.get_last_value("params"))
        if trial.status == trial_module.TrialStatus.COMPLETED:
            record["status"] = "completed"
            record["score"] = float(trial.score) if trial.score is not None else saved.get("score")
        elif trial.status == trial_module.TrialStatus.FAILED and saved.get("status") in ("skipped", "failed"):
            record["status"], record["reason"] = saved["status"], saved.get("reason")
        else:  # lost with its worker (twice), or never finished
            record["status"] = "failed"
            record["reason"] = oracle.lost_reason(trial_id) or "the trial did not finish"
        if record["status"] == "completed" and oracle.lost_reason(trial_id):
            record["note"] = f"run again after it was {oracle.lost_reason(trial_id)}"
        for extra in ("epochs", "tuner_id", "memory_mb"):
            if saved.get(extra) is not None:
                record[extra] = saved[extra]
        out.append(record)
    return out


def _best(trials: list[dict], objective: str) -> dict | None:
    done = [t for t in trials if t["status"] == "completed" and t["score"] is not None]
    if not done:
        return None
    sign = 1 if OBJECTIVES[objective] == "max" else -1
    return dict(max(done, key=lambda t: (sign * t["score"], -done.index(t))))


def _counts(trials: list[dict]) -> str:
    counts = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no trial ran"


def _best_values(hyper: HyperRecipe, best: dict) -> tuple[dict, dict]:
    values = dict(best["hyperparameters"])
    training = values.pop("training", {})
    return {**hyper.fixed_params, **values}, {**hyper.fixed_training, **training}


def _save_best(search: _RecipeTuner, hyper: HyperRecipe, data: Dataset, best: dict,
               directory: Path, settings: dict) -> str:
    """best/model.keras (the best epoch of the best trial), run.json and metrics.json."""
    from cnnbuilder.training.engine import _RunSpec

    from cnnbuilder.model.builder import build
    from cnnbuilder.training.engine import _compile

    params, training = _best_values(hyper, best)
    config = hyper.training_config(training)
    keras.backend.clear_session()
    keras.utils.set_random_seed(settings["seed"])
    model = build(hyper.recipe, input_shape=hyper.input_shape, classes=hyper.classes, **params)
    _load_weights(model, search._get_checkpoint_fname(best["trial_id"]))
    _compile(model, config, 1, False)
    model.optimizer.build(model.trainable_variables)  # saved whole, so it loads without warnings
    target = directory / BEST_DIR
    target.mkdir(parents=True, exist_ok=True)
    runs.atomic_save_model(model, target / runs.MODEL)
    test = make_pipeline(data.test, input_shape=hyper.input_shape, batch_size=config.batch_size,
                         training=False)
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    spec = _RunSpec.create(_recipe_with_training(hyper, training), data, params=params,
                           input_shape=hyper.input_shape,
                           overrides=dict(epochs=best.get("epochs") or hyper.epochs),
                           seed=settings["seed"], mixed_precision=False, jit=False)
    runs.atomic_write_json(target / runs.RUN, {**spec.run_json(), "tuning": {
        "trial_id": best["trial_id"], "hyperparameters": best["hyperparameters"],
        "objective": settings["objective"], "score": best["score"]}})
    runs.atomic_write_json(target / runs.METRICS, {
        "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
        "epochs_run": best.get("epochs") or hyper.epochs, "params": int(model.count_params()),
        "seconds": best.get("seconds"), "dataset": data.name, "class_names": list(data.class_names),
        "recipe": hyper.recipe.name, settings["objective"]: best["score"],
    })
    return f"{BEST_DIR}/{runs.MODEL}"


def _recipe_with_training(hyper: HyperRecipe, training: dict) -> dict:
    """The recipe as a dict whose training: section holds the trial's settings."""
    data = copy.deepcopy(hyper.recipe.document.data)
    data.pop("extends", None)
    data["training"] = {**(data.get("training") or {}), **training}
    return data


def _retrain(hyper: HyperRecipe, data: Dataset, best: dict, directory: Path, epochs: int,
             seed: int, overwrite: bool, quiet: bool) -> dict:
    """Train the best configuration again, for `epochs` epochs, with `cnnbuilder.train`."""
    output = directory / RETRAINED_DIR
    finished = runs.read_json(output / runs.METRICS) if not overwrite else None
    if finished is not None:  # a rerun after a kill between the retraining and tuning.json
        metrics = finished
    else:
        params, training = _best_values(hyper, best)
        training.pop("epochs", None)
        metrics = _train_best(hyper, data, params, training, output, epochs, seed, overwrite, quiet)
    return {"output": RETRAINED_DIR, "epochs": epochs, "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"], "params": metrics["params"]}


def _train_best(hyper, data, params, training, output, epochs, seed, overwrite, quiet) -> dict:
    from cnnbuilder.training.engine import train

    result = train(_recipe_with_training(hyper, training), data, output=output, epochs=epochs,
                   params=params, input_shape=hyper.input_shape, seed=seed,
                   verbose=0 if quiet else (1 if _isatty() else 2), overwrite=overwrite)
    return result.metrics


__all__ = ["HyperRecipe", "TrialSkipped", "TuningError", "tune", "clear_search", "TUNERS", "OBJECTIVES"]
