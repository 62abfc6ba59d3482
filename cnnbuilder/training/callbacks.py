"""Callbacks a run needs beside its learning-rate schedule: a warm-up that ends on a
condition, reduce-on-plateau, a stop at the paper's last iteration, the seeds of the
model's own random layers set per epoch (`EpochSeeds`), and validation on the weights'
moving average (``ema``: Keras' `SwapEMAWeights`)."""

from __future__ import annotations

from collections import deque

import keras

from cnnbuilder.recipe.training import TrainingConfig
from cnnbuilder.recipe.training_plan import Layout
from cnnbuilder.training.schedules import PaperSchedule, schedule_of


class WarmupUntilError(keras.callbacks.Callback):
    """Ends the warm-up of the model's `PaperSchedule` once the training error is below
    `threshold` (He et al. 2016, §4.2: ResNet-110 trains at 0.01 "until the training error
    is below 80%", then at 0.1).

    The error is that of the last `window` batches, recovered from the running epoch mean
    Keras logs (batch k's accuracy is k·mean_k - (k-1)·mean_(k-1)).
    """

    def __init__(self, threshold: float, window: int = 10):
        super().__init__()
        self.threshold, self.window = float(threshold), int(window)
        self._recent: deque = deque(maxlen=self.window)
        self._mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        schedule = schedule_of(self.model.optimizer)
        if not isinstance(schedule, PaperSchedule) or "accuracy" not in (logs or {}):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step >= int(schedule.warmup_end.numpy()):
            return  # ended (by the condition or its length)
        mean = float(logs["accuracy"])
        self._recent.append((batch + 1) * mean - batch * self._mean)
        self._mean = mean
        if len(self._recent) == self.window and 1 - sum(self._recent) / self.window < self.threshold:
            schedule.end_warmup(step)
            if keras.backend.backend() == "jax":
                # JAX compiled the training step with the warm-up's end as a constant (the
                # schedule's variable is not part of the state it threads through the
                # step): compile it again, once, with the new end.
                self.model.make_train_function(force=True)


class StopAtStep(keras.callbacks.Callback):
    """Stops training after `total_steps` optimizer steps (the paper's last iteration when
    it falls inside an epoch). The step counter is read (a device-to-host copy) only in the
    epoch where the stop can fall, given `steps_per_epoch`."""

    def __init__(self, total_steps: int, steps_per_epoch: int | None = None):
        super().__init__()
        self.total_steps = int(total_steps)
        self.steps_per_epoch = steps_per_epoch
        self._watching = True

    def on_epoch_begin(self, epoch, logs=None):
        if self.steps_per_epoch:
            self._watching = (epoch + 1) * self.steps_per_epoch >= self.total_steps

    def on_train_batch_end(self, batch, logs=None):
        if self._watching and int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            self.model.stop_training = True


def schedule_callbacks(config: TrainingConfig, plan: Layout, *, score: str = "val_accuracy") -> list:
    """The callbacks the run of `config` laid out as `plan` needs (`score`: the validation
    metric a plateau schedule watches; ``val_mean_iou`` for segmentation)."""
    callbacks = []
    if config.ema:
        # Validation (so the best-epoch choice) sees the averaged weights; they are swapped
        # back before the epoch's commit, whose resume checkpoint must hold the trained
        # ones (the averages stay optimizer variables: a resume continues both exactly).
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    if config.warmup_until_error is not None and plan.warmup_steps:
        callbacks.append(WarmupUntilError(config.warmup_until_error))
    if config.schedule == "plateau":
        # "Divided by 10 when the validation error stopped improving", at most
        # `plateau_reductions` times (Krizhevsky et al. §5, Simonyan & Zisserman §3.1).
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=score, mode="max", factor=config.step_factor,
            patience=config.plateau_patience, verbose=0,
            min_lr=config.learning_rate * config.step_factor ** config.plateau_reductions))
    if plan.total_steps < plan.epochs * plan.steps_per_epoch:
        callbacks.append(StopAtStep(plan.total_steps, plan.steps_per_epoch))
    return callbacks


class EpochSeeds(keras.callbacks.Callback):
    """Sets the state of every random layer's seed generator (Dropout, and any layer that
    draws in training) at the start of epoch e to a function of (seed, e, the generator's
    place in the model), so those draws, like the pipeline's, depend on (seed, epoch,
    step) alone: a run resumed at epoch e draws what the uninterrupted run drew there.
    (A .keras checkpoint does not hold the generators' state.)

    Each generator counts its draws in the second word of its state; an epoch starts at
    e·2**20 of them, room for a million draws an epoch.
    """

    EPOCH_STRIDE = 2 ** 20

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        for index, generator in enumerate(_seed_generators(self.model)):
            first = (self.seed * 1_000_003 + index * 7919 + 17) % 2 ** 31
            counter = (epoch * self.EPOCH_STRIDE) % 2 ** 31
            generator.state.assign(keras.ops.convert_to_tensor([first, counter],
                                                               dtype=generator.state.dtype))


def _seed_generators(model) -> list:
    """The seed generators of `model`'s layers, in the layers' order."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        found += list(getattr(layer, "_seed_generators", []) or [])
    return found


__all__ = ["EpochSeeds", "StopAtStep", "WarmupUntilError", "schedule_callbacks"]
