"""The training engine: `train`, every tuning trial and fine-tuning go through it.

One path, in four steps::

    job = prepare(recipe_or_model, data, training={...})   # settings, checked
    model = job.build()                                     # or a resumed checkpoint
    job.compile(model)                                      # once
    history = job.fit(model, callbacks=[...])               # model.fit over job.pipelines()
    job.evaluate(model)                                     # on the test split

`train()` wraps it with a run directory (DESIGN.md §5): it validates everything (recipe,
dataset, settings, the output directory) before it writes a byte, commits each finished
epoch (`training.commit`), and rerunning the same call after an interruption continues
from the last finished epoch. The tuner calls the same four steps for each trial.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import keras

from cnnbuilder.data import Dataset, load_dataset, make_pipeline
from cnnbuilder.errors import DataError, RunError
from cnnbuilder.recipe.training_plan import layout
from cnnbuilder.training import commit, distribution, multihost, rundir
from cnnbuilder.training.callbacks import schedule_callbacks
from cnnbuilder.training.freeze import FineTuning
from cnnbuilder.training.optimizers import compile_model, loss_and_metrics
from cnnbuilder.training.settings import RunSettings, run_normalization, steps_per_epoch


@dataclass
class TrainResult:
    """What `train` returns: the best epoch's model, its metrics and the history."""

    model: keras.Model
    metrics: dict
    history: list[dict] = field(default_factory=list)
    output: Path | None = None


class Job:
    """One training job: checked settings and the data they train on."""

    def __init__(self, settings: RunSettings, data: Dataset, source=None,
                 fine_tuning: FineTuning | None = None):
        self.settings = settings
        self.data = data
        self._source = source  # a recipe (name, path, dict, Recipe) or a keras.Model
        self.fine_tuning = fine_tuning or FineTuning()  # weights to start from, stages to freeze

    @property
    def config(self):
        """The training settings (`TrainingConfig`)."""
        return self.settings.config

    @cached_property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; the learning-rate schedule is laid out over them."""
        shard = distribution.data_shard()
        devices = 1 if shard is None else shard[1] * shard[2]
        return steps_per_epoch(self.data, self.config.batch_size, devices)

    def build(self) -> keras.Model:
        """The network, uncompiled, in the run's device strategy and precision (the
        caller's own Keras model when the job was prepared from one), with the job's
        weights loaded and its stages frozen (`training.freeze`)."""
        if isinstance(self._source, keras.Model):
            self.fine_tuning.apply(self._source)
            return self._source
        from cnnbuilder.model import build

        with distribution.strategy().scope():
            model = build(self._source, input_shape=self.settings.input_shape,
                          classes=self.settings.classes, weights=self.fine_tuning.weights,
                          **self.settings.recipe_params)
        self.fine_tuning.apply(model)
        return model

    def compile(self, model: keras.Model) -> None:
        """Compile `model` with the job's optimizer, schedule, loss and metrics."""
        with distribution.strategy().scope():
            compile_model(model, self.config, self.steps_per_epoch, jit=self.settings.jit,
                          dataset=self.data.name)

    @cached_property
    def pipelines(self) -> dict:
        """tf.data pipelines of the train (shuffled, augmented), validation and test splits."""
        if self.data.train is None:
            raise DataError(f"the dataset {self.data.name} has no training split.")
        common = dict(input_shape=self.settings.input_shape, batch_size=self.config.batch_size,
                      seed=self.settings.seed, shard=distribution.data_shard(),
                      **self.settings.normalization_args())
        return {
            "train": make_pipeline(self.data.train, training=True,
                                   augment=list(self.settings.augment), **common),
            "validation": make_pipeline(self.data.validation, training=False, **common),
            "test": make_pipeline(self.data.test, training=False, **common),
        }

    def fit(self, model: keras.Model, *, callbacks=(), initial_epoch: int = 0,
            epochs: int | None = None, verbose=1):
        """`model.fit` from `initial_epoch` to `epochs` (default: the settings'), with the
        callbacks the schedule needs (`training.callbacks`) before the caller's; None when
        there is nothing left to train."""
        plan = layout(self.config, self.steps_per_epoch, self.data.name)
        epochs = plan.epochs if epochs is None else epochs
        if initial_epoch >= epochs:
            return None
        with warnings.catch_warnings():  # the pipeline shuffles; fit's shuffle=True is moot
            warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
            # A sharded pipeline (several devices) does not know its length, and each epoch
            # is one pass over it, as intended: Keras' warning that it ran out is noise.
            warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")
            return model.fit(self.pipelines["train"], validation_data=self.pipelines["validation"],
                             initial_epoch=initial_epoch, epochs=epochs,
                             callbacks=[*schedule_callbacks(self.config, plan), *callbacks],
                             verbose=verbose)

    def evaluate(self, model: keras.Model) -> dict:
        """Test loss and accuracy of `model` (compiled for evaluation when it is not)."""
        if not model.compiled:
            model.compile(**loss_and_metrics())
        loss, accuracy = model.evaluate(self.pipelines["test"], verbose=0)
        return {"test_accuracy": float(accuracy), "test_loss": float(loss)}


def prepare(recipe_or_model, data: Dataset, *, params: dict | None = None, input_shape=None,
            training: dict | None = None, seed: int = 0, mixed_precision: bool = False,
            jit: bool = False, weights=None, freeze=None, statistics=None) -> Job:
    """A checked `Job`: the recipe (or Keras model), data and training settings.

    `training` overrides the recipe's `training:` section (see `RunSettings.create`).
    The input normalization follows the weights, else the recipe (`run_normalization`);
    a ``dataset`` normalization reads the training split once for its channel
    statistics unless the weights' run or `statistics` (mean, std) give them.
    Nothing is built, compiled or written.
    """
    settings = RunSettings.create(recipe_or_model, data, params=params, input_shape=input_shape,
                                  training=training, seed=seed, mixed_precision=mixed_precision,
                                  jit=jit)
    fine_tuning = FineTuning.create(recipe_or_model, weights, freeze, params=params,
                                    input_shape=settings.input_shape)
    normalization = run_normalization(
        recipe_or_model, data, settings.input_shape, weights_mode=fine_tuning.normalization,
        statistics=fine_tuning.statistics or statistics)
    settings = dataclasses.replace(settings, **normalization)
    distribution.check_batch_size(settings.config.batch_size)
    return Job(settings, data, source=recipe_or_model, fine_tuning=fine_tuning)


def train(recipe_or_model, dataset="digits", *, output=None, training: dict | None = None,
          epochs=None, batch_size=None, learning_rate=None, params=None, input_shape=None,
          augment=None, optimizer=None, schedule=None, weight_decay=None,
          mixed_precision=False, jit=False, seed=0, verbose=1, overwrite=False, data_dir=None,
          class_names=None, validation_split=0.1, test_split=0.2, skip_bad_images=False,
          tensorboard=True, weights=None, freeze=None) -> TrainResult:
    """Train a recipe (name, path, dict, Recipe) or a Keras model.

    Args:
        recipe_or_model: what to train; a Keras model is trained as it is (compiled here).
        dataset: "digits", "tfds:NAME", "folder:PATH", an (x, y) pair, a dict of splits,
            or a loaded `cnnbuilder.data.Dataset`.
        output: the run directory; with it the run is written there and can be resumed.
        training: overrides of the recipe's `training:` section, e.g.
            ``{"learning_rate": 0.05, "epochs": 30}``; the keyword arguments `epochs`,
            `batch_size`, `learning_rate`, `augment`, `optimizer`, `schedule` and
            `weight_decay` are shortcuts for the same (and win over it).
        params: recipe params (``{"growth_rate": 12}``); input_shape: of the network.
        mixed_precision, jit, seed, verbose: as `model.fit` / Keras.
        overwrite: replace a finished run in `output` instead of refusing.
        skip_bad_images: leave out the images of a folder dataset that cannot be used
            (corrupt, truncated, not an image...) instead of refusing the dataset; their
            count is `skipped_images` in metrics.json.
        tensorboard: write TensorBoard logs to ``output/logs/`` (`training.tensorboard`).
        weights: start from "imagenet", a weights or `.keras` file or a run directory
            (a new head where the classes differ); the input normalization becomes the
            one the weights were trained with (`training.freeze`, docs/fine_tuning.md).
        freeze: "backbone" or stage names ("stem,conv2" or a list) to keep frozen:
            weights unchanged, BatchNorm in inference mode.

    Returns:
        A `TrainResult` with the best epoch's model and the metrics written to
        metrics.json.
    """
    started = time.perf_counter()
    # How the dataset was loaded: run.json records it, so an export reloads the same splits.
    data_options = dict(data_dir=None if data_dir is None else str(data_dir),
                        validation_split=validation_split, test_split=test_split,
                        skip_bad_images=skip_bad_images)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, class_names=class_names, **data_options)
    overrides = {**(training or {}), **{k: v for k, v in dict(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, augment=augment,
        optimizer=optimizer, schedule=schedule, weight_decay=weight_decay).items() if v is not None}}
    job = prepare(recipe_or_model, data, params=params, input_shape=input_shape,
                  training=overrides, seed=seed, mixed_precision=mixed_precision, jit=jit,
                  weights=weights, freeze=freeze,
                  statistics=None if overwrite else _recorded_statistics(output))
    _warn_on_crashing_layers(recipe_or_model)
    if output is None:
        return _run(job, None, None, verbose=verbose, started=started, tensorboard=False)
    directory = Path(output)
    if not distribution.is_writer():
        # Another process of a multi-process run: process 0 opens and writes the directory.
        state = _shared_state(directory, None)
        return _run(job, directory, state, verbose=0, started=started, tensorboard=False)
    rundir.check_is_directory(directory)
    with rundir.exclusive(directory / rundir.LOCK, what="training run"):
        state = _shared_state(directory, lambda: _open_run_directory(
            directory, job, overwrite, data_options))
        return _run(job, directory, state, verbose=verbose, started=started,
                    tensorboard=tensorboard)


def _shared_state(directory: Path, open_directory) -> dict:
    """The state every process of the run starts from: process 0 opens the run directory
    (`open_directory`) and tells the others how many epochs it holds; they read the same
    committed state.json (the directory must be shared by all of them)."""
    if open_directory is not None:  # process 0
        try:
            state = open_directory()
        except BaseException:
            multihost.broadcast_int(-1)  # the others stop too, rather than wait
            raise
        multihost.broadcast_int(state["epochs_done"])
        return state
    with multihost.stops_on_lost_process("the start of the run"):
        done = multihost.broadcast_int(0)
    if done < 0:
        raise RunError(f"process 0 could not open the run directory {directory}; its "
                       "message says why.")
    if not done:
        return commit.fresh_state()
    state = rundir.read_json(directory / rundir.STATE, what="training state") or {}
    if state.get("epochs_done") != done:
        raise RunError(
            f"process 0 finds {done} finished epochs in {directory}, but process "
            f"{distribution.process_index()} finds {state.get('epochs_done', 0)}: the output "
            "directory must be one directory shared by every process (a network file system).")
    return state


def _run(job: Job, directory: Path | None, state: dict | None, *, verbose, started: float,
         tensorboard: bool) -> TrainResult:
    """Train `job` (resuming from `state` in `directory`, if any), evaluate the best
    epoch's model and write the finished run's files."""
    data, seed, mixed_precision = job.data, job.settings.seed, job.settings.mixed_precision
    writer = directory is not None and distribution.is_writer()
    keras.utils.set_random_seed(seed)
    with distribution.precision(mixed_precision), multihost.stops_on_lost_process("training"):
        model = _resumed_model(directory, state) if state and state["epochs_done"] else None
        if model is None:
            model = job.build()
            job.compile(model)
        callbacks = [commit.EpochCommit(directory, state)] if writer else []
        if writer and tensorboard:
            from cnnbuilder.training.tensorboard import tensorboard_callbacks

            callbacks += tensorboard_callbacks(directory / rundir.LOGS_DIR, job,
                                               initial_epoch=state["epochs_done"])
        fit = job.fit(model, callbacks=callbacks, initial_epoch=state["epochs_done"] if state else 0,
                      verbose=verbose)
        best = _best_model(model, directory)
        scores = job.evaluate(best)
        if writer:
            # The finished model.keras carries Keras' own loss and metrics only (none of
            # the training's cnnbuilder optimizer, schedule or smoothed loss), so it loads
            # with keras.saving.load_model(safe_mode=True) where cnnbuilder is not installed.
            rundir.atomic_save_model(best, directory / rundir.MODEL)

    history = rundir.read_history(directory / rundir.HISTORY_CSV) if directory else _rows(fit)
    seconds = time.perf_counter() - started
    if directory:
        seconds = (rundir.read_json(directory / rundir.STATE) or {}).get("seconds") or seconds
    metrics = {
        **scores,
        "epochs_run": len(history),
        "params": int(best.count_params()),
        "seconds": round(seconds, 2),
        "dataset": data.name,
        "class_names": list(data.class_names),
        "recipe": job.settings.recipe_name,
        "best_epoch": commit.best_epoch(history),
        "skipped_images": len(data.skipped),
    }
    if writer:
        from cnnbuilder.plots.history import plot_history

        plot_history(history, directory / rundir.HISTORY_PNG,
                     title=f"{job.settings.recipe_name} on {data.name}")
        rundir.atomic_write_json(directory / rundir.METRICS, metrics)  # the run is finished
        import shutil

        shutil.rmtree(directory / rundir.RESUME_DIR, ignore_errors=True)
    return TrainResult(best, metrics, history, directory)


def _open_run_directory(directory: Path, job: Job, overwrite: bool, data_options: dict) -> dict:
    """Apply the run-directory policy; the state to start (or resume) from. run.json also
    records how the dataset was loaded and lists the images a folder dataset left out
    (``skip_bad_images``)."""
    settings = job.settings
    rundir.prepare_directory(directory, settings={**settings.identity(), **job.fine_tuning.identity()},
                             record=directory / rundir.RUN, marker=rundir.METRICS,
                             overwrite=overwrite, clear=rundir.clear_run, what="run",
                             extra={**settings.record(), "data_options": data_options,
                                    "skipped_images": list(job.data.skipped)},
                             check=commit.check_resumable)
    (directory / rundir.RESUME_DIR).mkdir(exist_ok=True)
    return commit.resumable_state(directory)


def _recorded_statistics(output) -> tuple | None:
    """(mean, std) of the ``dataset`` normalization recorded by an unfinished run in
    `output`: a resumed run goes on with them rather than computing them again (its
    identity, which holds them, must still match)."""
    try:  # an unreadable record is reported where the run directory is opened
        record = None if output is None else rundir.read_json(Path(output) / rundir.RUN)
    except RunError:
        return None
    preprocessing = (record or {}).get("preprocessing")
    if not isinstance(preprocessing, dict):
        return None
    from cnnbuilder.data.statistics import recorded_statistics

    try:
        return recorded_statistics(preprocessing)
    except DataError:  # another normalization, or a damaged record: computed afresh (and
        return None    # a damaged one then fails the identity check)


def _resumed_model(directory: Path, state: dict) -> keras.Model:
    """The checkpoint of the last committed epoch, compiled with its optimizer state."""
    path = directory / rundir.RESUME_DIR / state["checkpoint"]
    import cnnbuilder.model.layers  # noqa: F401  (registers the custom layers for loading)

    try:
        with distribution.strategy().scope():
            return keras.saving.load_model(path, compile=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or truncated checkpoint
        raise RunError(
            f"the checkpoint {path} of the unfinished run cannot be loaded ({exc}); "
            "pass --overwrite to start over."
        ) from None


def _best_model(model, directory) -> keras.Model:
    """The best epoch's model.keras of the run directory (`model` without one), in the
    run's device strategy. Every process of a multi-process run loads the one process 0
    wrote; asking process 0 whether it exists also waits for it to be written."""
    written = multihost.broadcast_int(
        int(directory is not None and (directory / rundir.MODEL).exists()))
    if not written:
        return model
    if not (directory / rundir.MODEL).exists():
        raise RunError(f"process {distribution.process_index()} cannot find the model process 0 "
                       f"wrote to {directory / rundir.MODEL}: the output directory must be one "
                       "directory shared by every process.")
    import cnnbuilder.model.layers  # noqa: F401

    with distribution.strategy().scope():
        return keras.saving.load_model(directory / rundir.MODEL, compile=False)


def _rows(fit) -> list[dict]:
    """History rows of a `model.fit` result (runs without a directory)."""
    if fit is None:
        return []
    keys = list(fit.history)
    return [{"epoch": i + 1, **{k: float(fit.history[k][i]) for k in keys}}
            for i in range(len(fit.history[keys[0]]) if keys else 0)]


def _warn_on_crashing_layers(recipe_or_model) -> None:
    """Warn when a user's own Keras model holds layers oneDNN's AVX-512 kernels crash on
    (docs/known_issues.md); recipe builds never hold them."""
    if not isinstance(recipe_or_model, keras.Model):
        return
    from cnnbuilder.model.onednn import crash_warning

    message = crash_warning(recipe_or_model)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
