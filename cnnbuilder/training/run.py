"""One training run of a prepared `Job`: what a person sees, the fit, and the finished files.

`Run.train` announces the run (a short banner, or "resuming at epoch N of M from DIR"),
trains through `Job.fit` with the per-epoch commits of `training.commit`, evaluates the
best epoch's model on the test split and writes the finished run's files: `model.keras`
compiled as the run trained (`optimizers.portable_compile`), `history.png` and, last,
`metrics.json`. Interrupted with Ctrl-C, it says how to continue.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from cnnbuilder import runs
from cnnbuilder.errors import RunError
from cnnbuilder.training import commit, distribution, multihost
from cnnbuilder.training.optimizers import portable_compile


@dataclass
class TrainResult:
    """What `train` returns: the best epoch's model, its metrics and the history."""

    model: keras.Model
    metrics: dict
    history: list[dict] = field(default_factory=list)
    output: Path | None = None


class Run:
    """A prepared `Job` trained once: `new_model` (before the run directory is opened, so
    a network Keras refuses fails before a byte is written), then `train`."""

    def __init__(self, job, *, verbose=1, started: float | None = None):
        self.job = job
        self.verbose = verbose
        self.started = time.perf_counter() if started is None else started
        self.model = None  # built by `new_model` ahead of `train`, when the caller did

    def new_model(self) -> keras.Model:
        """The job's network, seeded, in the run's precision, compiled."""
        settings = self.job.settings
        keras.utils.set_random_seed(settings.seed)
        with distribution.precision(settings.mixed_precision):
            model = self.job.build()
            self.job.compile(model)
        return model

    def train(self, directory: Path | None, state: dict | None, *,
              tensorboard: bool) -> TrainResult:
        """Train (resuming from `state` in `directory`, if any), evaluate the best epoch's
        model and write the finished run's files."""
        try:
            return self._train(directory, state, tensorboard)
        except KeyboardInterrupt:
            if directory is not None and distribution.is_writer():  # even when quiet
                print(f"\ninterrupted: {directory} keeps every finished epoch; rerun the same "
                      "command (or call) to continue from the last one.", file=sys.stderr)
            raise

    def _train(self, directory, state, tensorboard) -> TrainResult:
        job, settings = self.job, self.job.settings
        writer = directory is not None and distribution.is_writer()
        done = state["epochs_done"] if state else 0
        with distribution.precision(settings.mixed_precision), \
                multihost.stops_on_lost_process("training"):
            if done:
                keras.utils.set_random_seed(settings.seed)
                model = _resumed_model(directory, state)
            else:
                model = self.model or self.new_model()
            self.model = None
            if writer and self.verbose:
                print(self.banner(model, directory, done), flush=True)
            callbacks = [commit.EpochCommit(directory, state)] if writer else []
            if writer and tensorboard:
                from cnnbuilder.training.tensorboard import tensorboard_callbacks

                callbacks += tensorboard_callbacks(directory / runs.LOGS_DIR, job,
                                                   initial_epoch=done)
            fit = job.fit(model, callbacks=callbacks, initial_epoch=done, verbose=self.verbose)
            best = _best_model(model, directory)
            if directory is not None:
                # The finished model.keras carries the run's optimizer family and settings
                # in Keras' own classes: it loads with safe_mode=True without cnnbuilder.
                # The test loss is then plain cross-entropy, comparable across runs
                # (label smoothing and mixed targets are training's alone).
                # Stochastic depth, the identity in inference, becomes Identity layers.
                with distribution.strategy().scope():
                    from cnnbuilder.model.layers import without_drop_path

                    best = without_drop_path(best)
                    portable_compile(best, job.config, segmentation_classes=job.segmentation_classes)
            scores = job.evaluate(best)
            if writer:
                with distribution.local_only():
                    runs.atomic_save_model(best, directory / runs.MODEL)
        history = runs.read_history(directory / runs.HISTORY_CSV) if directory else _rows(fit)
        metrics = self._metrics(scores, history, best, directory)
        if writer:
            from cnnbuilder.plots.history import plot_history

            plot_history(history, directory / runs.HISTORY_PNG,
                         title=f"{settings.recipe_name} on {job.data.name}")
            if job.segmentation_classes:
                _plot_segmentation(job, best, directory / runs.SEGMENTATION_PNG)
            runs.atomic_write_json(directory / runs.METRICS, metrics)  # the run is finished
            import shutil

            shutil.rmtree(directory / runs.RESUME_DIR, ignore_errors=True)
        return TrainResult(best, metrics, history, directory)

    def _metrics(self, scores: dict, history: list, best, directory) -> dict:
        """metrics.json of the finished run."""
        job = self.job
        seconds = time.perf_counter() - self.started
        if directory:
            seconds = (runs.read_json(directory / runs.STATE) or {}).get("seconds") or seconds
        return {
            **scores,
            "epochs_run": len(history),
            "params": int(best.count_params()),
            "seconds": round(seconds, 2),
            "dataset": job.data.name,
            "class_names": list(job.data.class_names),
            "recipe": job.settings.recipe_name,
            "best_epoch": commit.best_epoch(history),
            "skipped_images": len(job.data.skipped),
        }

    def banner(self, model: keras.Model, directory: Path | None, done: int) -> str:
        """What is about to run, in a few lines: the network and its changed params, its
        parameters, the data, the optimizer and schedule, the epochs, the devices and the
        output (or, on a resume, where it resumes)."""
        job, settings, config = self.job, self.job.settings, self.job.config
        plan = job.layout
        if done:
            return (f"resuming at epoch {done + 1} of {plan.epochs} from {directory} "
                    f"({done} finished epoch{'s' if done != 1 else ''} kept)")
        changed = ", ".join(f"{k}={v}" for k, v in settings.params_given.items())
        sizes = job.data.sizes
        shape = "×".join(str(d) for d in settings.input_shape)
        from cnnbuilder.recipe.training import augment_label

        augment = ", ".join(augment_label(a) for a in settings.augment) or "none"
        modern = [f"loss {config.loss}"] if config.loss != "ce" else []
        if config.ema:
            modern.append(f"weight EMA {config.ema['decay']:g}" + (" (warm-up)" if config.ema["warmup"] else ""))
        if config.drop_path:
            modern.append(f"stochastic depth {config.drop_path:g} ({config.drop_path_rule})")
        if config.preset:
            modern.append(f"preset {config.preset}")
        decay = f"weight decay {config.weight_decay:g} ({config.weight_decay_mode})" \
            if config.weight_decay else "no weight decay"
        schedule = config.schedule
        if plan.boundaries:
            at = ", ".join(f"{b:g}" for b in plan.unit_boundaries)
            schedule += f" ×{config.step_factor:g} at {plan.unit} {at}"
        if plan.warmup_steps:
            schedule += f", warm-up {plan.warmup_steps} steps"
        processes = distribution.process_count()
        devices = f"{distribution.device_count()} device(s) on {distribution.backend()}" + (
            f", {processes} processes" if processes > 1 else "")
        return "\n".join([
            f"training {settings.recipe_name}" + (f" ({changed})" if changed else "")
            + f": {model.count_params():,} parameters, input {shape}, {settings.classes} classes",
            f"  data: {job.data.name}, {sizes['train']} train / {sizes['validation']} validation / "
            f"{sizes['test']} test images; augmentation: {augment}; "
            f"normalization: {settings.normalization}",
            f"  optimizer: {config.optimizer} lr {config.learning_rate:g}"
            + (f" momentum {config.momentum:g}"
               + (" nesterov" if config.nesterov and config.optimizer == "sgd" else "")
               if config.optimizer in ("sgd", "rmsprop") else "")
            + f", {decay}, batch {config.batch_size}; schedule: {schedule}"
            + "".join(f"; {m}" for m in modern),
            f"  length: {plan.epochs} epochs of {plan.steps_per_epoch} steps "
            f"({plan.total_steps} steps); {devices}; seed {settings.seed}",
            f"  output: {directory if directory is not None else 'none (nothing is written)'}",
        ])


def _plot_segmentation(job, model, path: Path, count: int = 4) -> None:
    """`segmentation.png`: a few validation images (test ones where there is no
    validation split) beside their true and predicted masks."""
    import numpy as np

    from cnnbuilder.plots.segmentation import segmentation_figure

    split = "validation" if job.data.validation is not None else "test"
    images, masks, weights = next(iter(job.pipeline(split)))
    images, masks = np.asarray(images)[:count], np.asarray(masks)[:count]
    shown = np.where(np.asarray(weights)[:count] > 0, masks, -1)  # ignored pixels stay apart
    predicted = np.argmax(model.predict_on_batch(images), axis=-1)
    figure = segmentation_figure(images, shown, predicted, list(job.data.class_names))
    figure.savefig(path, dpi=100)


def _resumed_model(directory: Path, state: dict) -> keras.Model:
    """The checkpoint of the last committed epoch, compiled with its optimizer state."""
    path = runs.checkpoint_path(directory, state)
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
    """The best epoch's model.keras of the run directory (`model` without one), compiled
    as it trained, in the run's device strategy. Every process of a multi-process run loads
    the one process 0 wrote; asking process 0 whether it exists also waits for it."""
    written = multihost.broadcast_int(
        int(directory is not None and (directory / runs.MODEL).exists()))
    if not written:
        return model
    if not (directory / runs.MODEL).exists():
        raise RunError(f"process {distribution.process_index()} cannot find the model process 0 "
                       f"wrote to {directory / runs.MODEL}: the output directory must be one "
                       "directory shared by every process.")
    import cnnbuilder.model.layers  # noqa: F401

    with distribution.strategy().scope():
        return keras.saving.load_model(directory / runs.MODEL, compile=True)


def _rows(fit) -> list[dict]:
    """History rows of a `model.fit` result (runs without a directory)."""
    if fit is None:
        return []
    keys = list(fit.history)
    return [{"epoch": i + 1, **{k: float(fit.history[k][i]) for k in keys}}
            for i in range(len(fit.history[keys[0]]) if keys else 0)]


__all__ = ["Run", "TrainResult"]
