"""Training with `model.fit`: the paper's optimizer and schedule, resumable run directories.

`train()` validates everything (recipe, dataset, settings, the output directory) before
it writes a byte, then trains epoch by epoch, committing each finished epoch (see
`cnnbuilder.training.rundir`). Rerunning the same call after an interruption continues from the
last finished epoch.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cnnbuilder.training import rundir as runs
from cnnbuilder.data.datasets import Dataset, load_dataset, make_pipeline
from cnnbuilder.errors import CnnBuilderError, DataError, RunError
from cnnbuilder.recipe.training import TrainingConfig, training_config
from cnnbuilder.zoo import load_recipe

# Digits are handwriting: flips would turn them into other symbols.
DATASET_AUGMENTATION = {"digits": ("translate",)}


@dataclass
class TrainResult:
    model: keras.Model
    metrics: dict
    history: list[dict] = field(default_factory=list)
    output: Path | None = None


def train(recipe_or_model, dataset="digits", *, output=None, epochs=None, batch_size=None,
          learning_rate=None, params=None, input_shape=None, augment=None, optimizer=None,
          schedule=None, weight_decay=None, mixed_precision=False, jit=False, seed=0,
          verbose=1, overwrite=False, data_dir=None, class_names=None,
          validation_split=0.1, test_split=0.2) -> TrainResult:
    """Train a recipe (name, path, dict, Recipe) or a compiled-or-not Keras model.

    `dataset` is "digits", "tfds:NAME", "folder:PATH", an (x, y) pair or a dict of splits,
    or a loaded `cnnbuilder.data.datasets.Dataset`. Settings default to the recipe's `training:`
    section. With `output`, the run is written there and can be resumed.
    """
    started = time.perf_counter()
    data = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, data_dir=data_dir, class_names=class_names,
        validation_split=validation_split, test_split=test_split)
    spec = _RunSpec.create(recipe_or_model, data, params=params or {}, input_shape=input_shape,
                           overrides=dict(epochs=epochs, batch_size=batch_size,
                                          learning_rate=learning_rate, augment=augment,
                                          optimizer=optimizer, schedule=schedule,
                                          weight_decay=weight_decay),
                           seed=seed, mixed_precision=mixed_precision, jit=jit)
    directory = Path(output) if output is not None else None
    state = _prepare_directory(directory, spec, overwrite) if directory else None

    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy(_mixed_policy())
    try:
        with _strategy().scope():
            model = _model_for(spec, recipe_or_model, directory, state)
        pipelines = _pipelines(data, spec)
        steps = _steps_per_epoch(data, spec)
        if not model.compiled or (state is None or not state.get("epochs_done")):
            _compile(model, spec.config, steps, jit)
        callbacks = [_EpochCommit(directory, spec, state)] if directory else []
        done = state["epochs_done"] if state else 0
        fit = model.fit(pipelines["train"], validation_data=pipelines["validation"],
                        initial_epoch=done, epochs=spec.config.epochs, callbacks=callbacks,
                        verbose=verbose) if done < spec.config.epochs else None
        best = _best_model(model, directory)
        test_loss, test_accuracy = best.evaluate(pipelines["test"], verbose=0)
    finally:
        if mixed_precision:
            keras.mixed_precision.set_global_policy("float32")

    history = runs.read_history(directory / runs.HISTORY_CSV) if directory else _rows(fit)
    seconds = (state or {}).get("seconds", 0.0) if directory else 0.0
    if directory:
        seconds = runs.read_json(directory / runs.STATE).get("seconds", 0.0) if (directory / runs.STATE).exists() else seconds
    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "epochs_run": len(history),
        "params": int(best.count_params()),
        "seconds": round(seconds or time.perf_counter() - started, 2),
        "dataset": data.name,
        "class_names": list(data.class_names),
        "recipe": spec.recipe_name,
        "best_epoch": _best_epoch(history),
    }
    if directory:
        from cnnbuilder.plots.history import plot_history

        plot_history(history, directory / runs.HISTORY_PNG, title=f"{spec.recipe_name} on {data.name}")
        runs.atomic_write_json(directory / runs.METRICS, metrics)
        shutil.rmtree(directory / runs.RESUME_DIR, ignore_errors=True)
    return TrainResult(best, metrics, history, directory)


# ----------------------------------------------------------------------------- the run


@dataclass
class _RunSpec:
    recipe_name: str
    recipe_params: dict
    input_shape: tuple
    classes: int
    config: TrainingConfig
    augment: tuple
    dataset: str
    class_names: list
    seed: int
    mixed_precision: bool
    jit: bool

    @classmethod
    def create(cls, recipe_or_model, data: Dataset, *, params, input_shape, overrides, seed,
               mixed_precision, jit):
        if isinstance(recipe_or_model, keras.Model):
            shape = tuple(recipe_or_model.inputs[0].shape[1:])
            outputs = recipe_or_model.outputs[0].shape[-1]
            if outputs != data.num_classes:
                raise DataError(
                    f"the model {recipe_or_model.name} has {outputs} outputs but the dataset "
                    f"{data.name} has {data.num_classes} classes."
                )
            name, section, resolved = recipe_or_model.name, {}, {}
        else:
            recipe = load_recipe(recipe_or_model)
            shape = tuple(input_shape) if input_shape else recipe.default_input_shape
            # Validates params and shapes before anything is written.
            resolved = recipe.plan(input_shape=shape, classes=data.num_classes, **params).params
            name, section = recipe.name, recipe.training
        config = training_config(section, where=f"training settings of {name}", **overrides)
        augment = overrides.get("augment")
        if augment is None:
            augment = DATASET_AUGMENTATION.get(data.name, config.augment)
        augment = tuple(augment if not isinstance(augment, str) else [augment])
        return cls(name, resolved, shape, data.num_classes, config, augment, data.name,
                   list(data.class_names), seed, mixed_precision, jit)

    def identity(self) -> dict:
        """What must match for a rerun to continue this run rather than start over."""
        return {
            "recipe": self.recipe_name, "params": self.recipe_params,
            "input_shape": list(self.input_shape), "dataset": self.dataset,
            "training": self.config.to_dict(), "augment": list(self.augment), "seed": self.seed,
        }

    def run_json(self) -> dict:
        return {
            **self.identity(),
            "class_names": self.class_names,
            "classes": self.classes,
            # What serving must do to a raw uint8 image (see cnnbuilder.data.datasets.to_model_input).
            "preprocessing": {"scale": 255.0, "resize": "bilinear", "channels": self.input_shape[-1]},
            "mixed_precision": self.mixed_precision,
            "jit": self.jit,
            "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        }


def _prepare_directory(directory: Path, spec: _RunSpec, overwrite: bool) -> dict | None:
    """Decide between a fresh run and a resume; refuse to clobber a finished run."""
    if directory.exists() and not directory.is_dir():
        raise RunError(f"--output {directory} exists and is not a directory.")
    finished = (directory / runs.METRICS).exists()
    state = runs.read_json(directory / runs.STATE)
    previous = runs.read_json(directory / runs.RUN)
    if overwrite:
        runs.clear_run(directory) if directory.exists() else None
        state = previous = None
    elif finished:
        raise RunError(
            f"{directory} already holds a finished run (metrics.json). Choose another --output, "
            "or pass --overwrite to replace it."
        )
    elif previous is not None and _comparable(previous, spec) != _comparable(spec.identity(), spec):
        identity = json.loads(_comparable(spec.identity(), spec))
        changed = sorted(k for k in identity if previous.get(k) != identity[k])
        raise RunError(
            f"{directory} holds an unfinished run with other settings ({', '.join(changed)} "
            "differ), so it cannot be resumed with these. Rerun the original command to resume "
            "it, choose another --output, or pass --overwrite to start over."
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / runs.RESUME_DIR).mkdir(exist_ok=True)
    runs.atomic_write_json(directory / runs.RUN, spec.run_json())
    if state and state.get("epochs_done"):
        _finish_promotion(directory, state)
        return state
    return {"epochs_done": 0, "best": None, "best_epoch": None, "checkpoint": None, "seconds": 0.0}


def _comparable(record: dict, spec: "_RunSpec") -> str:
    """The identity fields of a run record, as canonical JSON."""
    return json.dumps({k: record.get(k) for k in spec.identity()}, sort_keys=True, default=str)


def _finish_promotion(directory: Path, state: dict) -> None:
    """Complete a best-model promotion that a kill may have cut short."""
    staged = directory / runs.RESUME_DIR / f"best-{state.get('best_epoch')}.keras"
    if staged.exists():
        staged.replace(directory / runs.MODEL)


def _model_for(spec: _RunSpec, recipe_or_model, directory, state) -> keras.Model:
    checkpoint = state and state.get("checkpoint")
    if checkpoint:
        path = directory / runs.RESUME_DIR / checkpoint
        try:
            import cnnbuilder.model.layers  # noqa: F401  (registers custom layers, if any)
        except ImportError:
            pass
        try:
            return keras.saving.load_model(path, compile=True)
        except Exception as exc:
            raise RunError(
                f"the checkpoint {path} of the unfinished run cannot be loaded ({exc}); "
                "pass --overwrite to start over."
            ) from None
    if isinstance(recipe_or_model, keras.Model):
        return recipe_or_model
    from cnnbuilder.model.builder import build

    return build(recipe_or_model, input_shape=spec.input_shape, classes=spec.classes,
                 **spec.recipe_params)


def _mixed_policy() -> str:
    # float16 needs a GPU to pay off; bfloat16 is the mixed type CPUs support.
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def _strategy():
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _pipelines(data: Dataset, spec: _RunSpec) -> dict:
    batch = spec.config.batch_size
    common = dict(input_shape=spec.input_shape, batch_size=batch, seed=spec.seed)
    if data.train is None:
        raise DataError(f"the dataset {data.name} has no training split.")
    return {
        "train": make_pipeline(data.train, training=True, augment=list(spec.augment), **common),
        "validation": make_pipeline(data.validation, training=False, **common),
        "test": make_pipeline(data.test, training=False, **common),
    }


def _steps_per_epoch(data: Dataset, spec: _RunSpec) -> int:
    from cnnbuilder.data.datasets import split_size

    size = split_size(data.train)
    if not size:
        return 1000
    return max(1, -(-size // spec.config.batch_size))


def learning_rate_schedule(config: TrainingConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    warmup = config.warmup_epochs * steps_per_epoch
    rate = config.learning_rate
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate, decay_steps=max(1, total - warmup),
            warmup_target=rate if warmup else None, warmup_steps=warmup)
    if config.schedule == "step":
        boundaries = [int(f * total) for f in config.step_at]
        values = [rate * config.step_factor**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return rate


def make_optimizer(config: TrainingConfig, steps_per_epoch: int):
    schedule = learning_rate_schedule(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov,
                                    weight_decay=decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    return keras.optimizers.RMSprop(schedule, momentum=config.momentum, weight_decay=decay)


def _compile(model, config: TrainingConfig, steps_per_epoch: int, jit: bool) -> None:
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=bool(jit),
    )


def _best_model(model, directory) -> keras.Model:
    if directory is None or not (directory / runs.MODEL).exists():
        return model
    try:
        import cnnbuilder.model.layers  # noqa: F401
    except ImportError:
        pass
    best = keras.saving.load_model(directory / runs.MODEL, compile=False)
    best.compile(loss=keras.losses.SparseCategoricalCrossentropy(),
                 metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return best


def _rows(fit) -> list[dict]:
    if fit is None:
        return []
    keys = list(fit.history)
    return [{"epoch": i + 1, **{k: float(fit.history[k][i]) for k in keys}}
            for i in range(len(fit.history[keys[0]]) if keys else 0)]


def _best_epoch(history: list[dict]):
    scored = [(float(r["val_accuracy"]), int(r["epoch"])) for r in history if r.get("val_accuracy") not in (None, "")]
    return max(scored, key=lambda s: (s[0], -s[1]))[1] if scored else None


class _EpochCommit(keras.callbacks.Callback):
    """Commits each finished epoch: best model, resume checkpoint, history, then state."""

    def __init__(self, directory: Path, spec: _RunSpec, state: dict):
        super().__init__()
        self.directory = directory
        self.resume = directory / runs.RESUME_DIR
        self.state = dict(state)
        self.history = runs.read_history(directory / runs.HISTORY_CSV)[: self.state["epochs_done"]]
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
            runs.atomic_save_model(self.model, self.resume / f"best-{number}.keras")
            state.update(best=float(score), best_epoch=number)
        checkpoint = f"epoch-{number}.keras"
        runs.atomic_save_model(self.model, self.resume / checkpoint)
        history = self.history + [row]
        runs.atomic_write_text(self.directory / runs.HISTORY_CSV, runs.history_csv(history))
        state.update(epochs_done=number, checkpoint=checkpoint,
                     seconds=round(state.get("seconds", 0.0) + seconds, 3))
        runs.atomic_write_json(self.directory / runs.STATE, state)  # the commit point
        if improved:
            _finish_promotion(self.directory, state)
        for old in self.resume.glob("epoch-*.keras"):
            if old.name != checkpoint:
                old.unlink(missing_ok=True)
        self.state, self.history = state, history


__all__ = ["TrainResult", "train", "make_optimizer", "learning_rate_schedule", "CnnBuilderError"]
