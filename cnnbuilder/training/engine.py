"""The training engine: `train`, every tuning trial and fine-tuning go through it.

One path, in four steps::

    job = prepare(recipe_or_model, data, training={...})   # settings, checked
    model = job.build()                                     # or a resumed checkpoint
    job.compile(model)                                      # once
    history = job.fit(model, callbacks=[...])               # model.fit over job.pipeline()
    job.evaluate(model)                                     # on the test split

`train()` resolves the run's settings once (`RunSettings.resolve`: the recipe loaded and
planned once) and wraps the steps with a run directory (DESIGN.md §5, `cnnbuilder.runs`):
it checks everything (recipe, dataset, settings, the network itself, the output
directory) before it writes a byte, commits each finished epoch (`training.commit`), and
rerunning the same call after an interruption continues from the last finished epoch
with the same batches (`training.run`). The tuner calls the same four steps per trial.
"""

from __future__ import annotations

import time
import warnings
from functools import cached_property
from pathlib import Path

import keras

from cnnbuilder import runs
from cnnbuilder.data import Dataset, load_dataset, make_pipeline
from cnnbuilder.errors import DataError, RunError
from cnnbuilder.model.builder import build_planned
from cnnbuilder.recipe.training_plan import Layout, layout
from cnnbuilder.training import distribution, multihost
from cnnbuilder.training.callbacks import EpochSeeds, schedule_callbacks
from cnnbuilder.training.edges import check_keywords
from cnnbuilder.training.freeze import FineTuning
from cnnbuilder.training.optimizers import compile_model, loss_and_metrics
from cnnbuilder.training.run import Run, TrainResult
from cnnbuilder.training.settings import RunSettings, steps_per_epoch


class Job:
    """One training job: settings resolved once (`RunSettings`) and the data they train on."""

    def __init__(self, settings: RunSettings, data: Dataset):
        self.settings = settings
        self.data = data

    @property
    def config(self):
        """The training settings (`TrainingConfig`)."""
        return self.settings.config

    @property
    def fine_tuning(self) -> FineTuning:
        """The weights the job starts from and the stages it freezes."""
        return self.settings.fine_tuning

    @cached_property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; the learning-rate schedule is laid out over them."""
        shard = distribution.data_shard()
        devices = 1 if shard is None else shard[1] * shard[2]
        return steps_per_epoch(self.data, self.config.batch_size, devices)

    @cached_property
    def layout(self) -> Layout:
        """The run's schedule in optimizer steps (compile and fit share it)."""
        return layout(self.config, self.steps_per_epoch, self.data.name)

    def build(self) -> keras.Model:
        """The network, uncompiled, in the run's device strategy and precision (the
        caller's own Keras model when the job was prepared from one), with the job's
        weights loaded and its stages frozen (`training.freeze`)."""
        settings = self.settings
        if settings.model is not None:
            self.fine_tuning.apply(settings.model)
            return settings.model
        with distribution.strategy().scope():
            model = build_planned(settings.recipe, settings.plan, weights=self.fine_tuning.weights,
                                  params=settings.recipe_params)
        self.fine_tuning.apply(model)
        return model

    def compile(self, model: keras.Model) -> None:
        """Compile `model` with the job's optimizer, schedule, loss and metrics."""
        with distribution.strategy().scope():
            compile_model(model, self.config, self.steps_per_epoch, jit=self.settings.jit,
                          dataset=self.data.name, plan=self.layout,
                          segmentation_classes=self.segmentation_classes)

    @property
    def segmentation_classes(self) -> int | None:
        """The class count of a segmentation job (None for classification)."""
        return self.settings.classes if self.settings.task == "segmentation" else None

    def pipeline(self, split: str, *, epochs: tuple[int, int] | None = None):
        """The tf.data pipeline of `split`: ``train`` shuffled and augmented (with
        `epochs` = (first, end), the batches of those epochs, each a function of (seed,
        epoch, position): see `cnnbuilder.data.pipeline`), the others in order."""
        examples = getattr(self.data, split)
        if examples is None:
            raise DataError(f"the dataset {self.data.name} has no {split} split.")
        training = split == "train"
        return make_pipeline(examples, training=training, input_shape=self.settings.input_shape,
                             batch_size=self.config.batch_size, seed=self.settings.seed,
                             shard=distribution.data_shard(),
                             augment=self.settings.pipeline_augment() if training else None,
                             epochs=epochs if training else None,
                             **self._segmentation_args(),
                             **self.settings.normalization_args())

    @property
    def score(self) -> str:
        """The validation metric the job is judged by (the best epoch, a plateau schedule)."""
        return "val_mean_iou" if self.segmentation_classes else "val_accuracy"

    def _segmentation_args(self) -> dict:
        """`make_pipeline`'s void label and class weights of a segmentation job (none for
        classification)."""
        if not self.segmentation_classes:
            return {}
        weights = list(self.config.class_weights) if self.config.class_weights else None
        return {"ignore_label": self.data.ignore_label, "class_weights": weights}

    def fit(self, model: keras.Model, *, callbacks=(), initial_epoch: int = 0,
            epochs: int | None = None, verbose=1):
        """`model.fit` from `initial_epoch` to `epochs` (default: the settings'), with the
        callbacks the schedule needs (`training.callbacks`) before the caller's; None when
        there is nothing left to train.

        Where the training split's size is known, epoch e's batches are drawn from (seed,
        e) alone, so a run resumed at `initial_epoch` trains on exactly what the
        uninterrupted run did."""
        epochs = self.layout.epochs if epochs is None else epochs
        if initial_epoch >= epochs:
            return None
        exact = self.data.sizes["train"] is not None
        train = self.pipeline("train", epochs=(initial_epoch, epochs) if exact else None)
        with warnings.catch_warnings():  # the pipeline shuffles; fit's shuffle=True is moot
            warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
            # A sharded pipeline (several devices) does not know its length, and each epoch
            # is one pass over it, as intended: Keras' warning that it ran out is noise.
            warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")
            return model.fit(train, validation_data=self.pipeline("validation"),
                             initial_epoch=initial_epoch, epochs=epochs,
                             steps_per_epoch=self.steps_per_epoch if exact else None,
                             callbacks=[EpochSeeds(self.settings.seed),
                                        *schedule_callbacks(self.config, self.layout, score=self.score),
                                        *callbacks],
                             verbose=verbose)

    def evaluate(self, model: keras.Model) -> dict:
        """Test loss and accuracy of `model` with the loss and metrics it is compiled with
        (the run's; Keras' plain ones for a model that is not compiled)."""
        if self.segmentation_classes:
            return self._evaluate_segmentation(model)
        if not model.compiled:
            model.compile(**loss_and_metrics())
        loss, accuracy = model.evaluate(self.pipeline("test"), verbose=0)
        return {"test_accuracy": float(accuracy), "test_loss": float(loss)}

    def _evaluate_segmentation(self, model: keras.Model) -> dict:
        """Test scores of a segmentation model over the pixels that count (weight > 0):
        ``test_loss`` (per-pixel cross-entropy, the mean PyTorch's ignore_index gives),
        ``test_mean_iou``, ``test_pixel_accuracy`` (also ``test_accuracy``) and
        ``test_iou_per_class`` {class name: IoU}, from one confusion matrix."""
        import numpy as np

        from cnnbuilder.training.segmentation_metrics import confusion_matrix, mean_iou, named_iou

        classes = self.segmentation_classes
        confusion = np.zeros((classes, classes), np.int64)
        loss_sum = weight_sum = 0.0
        for images, masks, weights in self.pipeline("test"):
            probabilities = model.predict_on_batch(images)
            masks, weights = np.asarray(masks), np.asarray(weights, np.float64)
            picked = np.take_along_axis(np.asarray(probabilities, np.float64),
                                        masks[..., None].astype(np.int64), axis=-1)[..., 0]
            loss_sum += float(np.sum(-np.log(np.clip(picked, 1e-7, 1.0)) * weights))
            weight_sum += float(np.sum(weights))
            confusion += confusion_matrix(masks, np.argmax(probabilities, axis=-1), classes, weights)
        accuracy = float(np.trace(confusion) / max(1, confusion.sum()))
        mean = mean_iou(confusion)
        return {"test_mean_iou": 0.0 if np.isnan(mean) else mean,
                "test_pixel_accuracy": accuracy, "test_accuracy": accuracy,
                "test_loss": loss_sum / weight_sum if weight_sum else 0.0,
                "test_iou_per_class": named_iou(confusion, self.data.class_names)}


def prepare(recipe_or_model, data: Dataset, **options) -> Job:
    """A checked `Job`: the recipe (or Keras model), data and training settings, resolved
    once by `RunSettings.resolve` (its keywords: params, input_shape, training, seed,
    mixed_precision, jit, weights, freeze, statistics, data_options). Nothing is built,
    compiled or written."""
    settings = RunSettings.resolve(recipe_or_model, data, **options)
    distribution.check_batch_size(settings.config.batch_size)
    return Job(settings, data)


def train(recipe_or_model, dataset="digits", *, output=None, training: dict | None = None,
          epochs=None, batch_size=None, learning_rate=None, params=None, input_shape=None,
          augment=None, optimizer=None, schedule=None, weight_decay=None,
          mixed_precision=False, jit=False, seed=0, verbose=1, overwrite=False, data_dir=None,
          class_names=None, validation_split=0.1, test_split=0.2, skip_bad_images=False,
          tensorboard=True, weights=None, freeze=None) -> TrainResult:
    """Train a recipe (name, path, dict, Recipe) or a Keras model.

    Args:
        recipe_or_model: what to train; a Keras model is trained as it is (compiled here),
            on its inputs as given (float arrays are fed unchanged).
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
        A `TrainResult` with the best epoch's model (compiled as its `model.keras`: see
        `optimizers.portable_compile`), the metrics written to metrics.json and the
        history (numbers).
    """
    started = time.perf_counter()
    given = dict(seed=seed, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                 weight_decay=weight_decay, input_shape=input_shape, output=output)
    check_keywords(dataset, given)  # each bad value named by its keyword, nothing loaded yet
    seed, epochs, batch_size, input_shape = (given[k] for k in ("seed", "epochs", "batch_size",
                                                                 "input_shape"))
    # How the dataset was loaded: run.json records it, so an export reloads the same splits.
    data_options = dict(data_dir=None if data_dir is None else str(data_dir),
                        validation_split=validation_split, test_split=test_split,
                        skip_bad_images=skip_bad_images)
    # A caller's Keras model takes its float arrays as they are; recipes keep their
    # preprocessing (float arrays are [0, 1] pixels to them).
    raw_floats = isinstance(recipe_or_model, keras.Model)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, class_names=class_names, raw_floats=raw_floats, **data_options)
    overrides = {**(training or {}), **{k: v for k, v in dict(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, augment=augment,
        optimizer=optimizer, schedule=schedule, weight_decay=weight_decay).items() if v is not None}}
    job = prepare(recipe_or_model, data, params=params, input_shape=input_shape,
                  training=overrides, seed=seed, mixed_precision=mixed_precision, jit=jit,
                  weights=weights, freeze=freeze, data_options=data_options,
                  statistics=None if overwrite else _recorded_statistics(output))
    _warn_on_crashing_layers(job.settings.model)
    run = Run(job, verbose=verbose, started=started)
    if output is None:
        return run.train(None, None, tensorboard=False)
    directory = Path(output)
    runs.check_is_directory(directory)
    # Everything that can fail before training (layer names Keras refuses, weights that
    # do not fit) fails here, before the run directory holds a byte. Every process builds
    # it at this point: under a multi-process distribution, creating variables is a
    # collective step that all of them must take together.
    with multihost.stops_on_lost_process("the start of the run"):
        run.model = run.new_model()
    if not distribution.is_writer():
        # Another process of a multi-process run: process 0 opens and writes the directory.
        run.verbose = 0
        return run.train(directory, _shared_state(directory, None), tensorboard=False)
    with runs.exclusive(directory / runs.LOCK, what="training run"):
        state = _shared_state(directory, lambda: _open_run_directory(directory, job, overwrite))
        return run.train(directory, state, tensorboard=tensorboard)


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
        return runs.fresh_state()
    state = runs.read_json(directory / runs.STATE, what="training state") or {}
    if state.get("epochs_done") != done:
        raise RunError(
            f"process 0 finds {done} finished epochs in {directory}, but process "
            f"{distribution.process_index()} finds {state.get('epochs_done', 0)}: the output "
            "directory must be one directory shared by every process (a network file system).")
    return state


def _open_run_directory(directory: Path, job: Job, overwrite: bool) -> dict:
    """Apply the run-directory policy; the state to start (or resume) from. run.json also
    records how the dataset was loaded and lists the images a folder dataset left out
    (``skip_bad_images``), and the training as resolved (the model card reads it). A
    directory where a previous attempt finished no epoch is replaced without asking."""
    settings = job.settings
    runs.prepare_directory(
        directory, settings=settings.identity(), record=directory / runs.RUN,
        marker=runs.METRICS, overwrite=overwrite, clear=runs.clear_run, what="run",
        extra={**settings.record(), "skipped_images": list(job.data.skipped),
               "sizes": dict(job.data.sizes),
               "resolved_training": settings.resolved_training(job.steps_per_epoch)},
        check=runs.check_resumable, progress=lambda d: runs.epochs_done(d) > 0)
    (directory / runs.RESUME_DIR).mkdir(exist_ok=True)
    return runs.resumable_state(directory)


def _recorded_statistics(output) -> tuple | None:
    """(mean, std) of the ``dataset`` normalization recorded by an unfinished run in
    `output`: a resumed run goes on with them rather than computing them again (its
    identity, which holds them, must still match)."""
    if output is None or not (Path(output) / runs.RUN).is_file():
        return None
    try:  # an unreadable record is reported where the run directory is opened
        preprocessing = runs.recorded_preprocessing(Path(output) / runs.MODEL)
    except RunError:
        return None
    if preprocessing is None:
        return None
    from cnnbuilder.data.statistics import recorded_statistics

    try:
        return recorded_statistics(preprocessing)
    except DataError:  # another normalization, or a damaged record: computed afresh (and
        return None    # a damaged one then fails the identity check)


def _warn_on_crashing_layers(model) -> None:
    """Warn when a user's own Keras `model` (None: a recipe build, which never holds them)
    holds layers oneDNN's AVX-512 kernels crash on (docs/known_issues.md)."""
    if model is None:
        return
    from cnnbuilder.model.onednn import crash_warning

    message = crash_warning(model)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
