"""The learning rate of a run as a Keras schedule over its optimizer steps.

`learning_rate_schedule` lays the recipe's schedule (counted in the paper's unit) out in
steps (`cnnbuilder.recipe.training_plan.layout`): `cosine` is Keras' `CosineDecay`;
`step`, and any schedule with a warm-up at a fixed rate, is `PaperSchedule`; `constant`
and `plateau` are a plain rate (`plateau` is lowered by Keras' `ReduceLROnPlateau`, which
needs a plain rate).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from cnnbuilder.recipe.training import TrainingConfig
from cnnbuilder.recipe.training_plan import Layout, layout as plan_layout


@keras.saving.register_keras_serializable(package="cnnbuilder")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay (or cosine, or constant) after an optional warm-up, over optimizer steps.

    Args:
        learning_rate: the rate after the warm-up.
        total_steps: the run's length in steps (the cosine decays to 0 over it).
        decay: "step", "cosine" or "constant".
        boundaries: steps from which the rate is multiplied by `factor` once more (from
            step 0 of the run, as He et al.'s 32k and 48k iterations: a warm-up does not
            move them).
        factor: the step factor (0.1: divide by 10).
        warmup_steps: length of the warm-up, in steps (at most, with `warmup_learning_rate`).
        warmup_learning_rate: the rate during the warm-up (He et al.: 0.01); None ramps
            linearly from 0 to `learning_rate`.
        warmup_end: the step the warm-up ended at when a condition ended it early
            (`callbacks.WarmupUntilError`); saved with the schedule so a resumed run keeps it.
    """

    def __init__(self, learning_rate, total_steps, decay="step", boundaries=(), factor=0.1,
                 warmup_steps=0, warmup_learning_rate=None, warmup_end=None):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.warmup_learning_rate = None if warmup_learning_rate is None else float(warmup_learning_rate)
        # A variable, so a callback can end the warm-up inside the compiled train step.
        self.warmup_end = keras.Variable(
            int(self.warmup_steps if warmup_end is None else warmup_end), dtype="int64",
            trainable=False, name="warmup_end")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = self.learning_rate
        if self.decay == "step" and self.boundaries:
            passed = ops.sum(ops.cast(ops.greater_equal(
                step, ops.convert_to_tensor(self.boundaries, "float32")), "float32"))
            rate = rate * ops.power(self.factor, passed)
        elif self.decay == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        rate = ops.cast(rate, "float32") * ops.ones_like(step)
        if not self.warmup_steps:
            return rate
        if self.warmup_learning_rate is None:  # linear ramp from 0
            warm = self.learning_rate * step / self.warmup_steps
            return ops.where(ops.less(step, self.warmup_steps), warm, rate)
        end = ops.cast(self.warmup_end, "float32")
        return ops.where(ops.less(step, end), self.warmup_learning_rate * ops.ones_like(step), rate)

    def end_warmup(self, step: int) -> None:
        """End the warm-up at `step` (when it has not ended yet)."""
        if int(step) < int(ops.convert_to_numpy(self.warmup_end)):
            self.warmup_end.assign(int(step))

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate, "total_steps": self.total_steps,
            "decay": self.decay, "boundaries": list(self.boundaries), "factor": self.factor,
            "warmup_steps": self.warmup_steps, "warmup_learning_rate": self.warmup_learning_rate,
            "warmup_end": int(ops.convert_to_numpy(self.warmup_end)),
        }


def learning_rate_schedule(config: TrainingConfig, steps_per_epoch: int, dataset: str = "",
                           plan: Layout | None = None):
    """The learning rate of `config` as a Keras schedule (or a plain rate) over the steps
    of a run with epochs of `steps_per_epoch` steps on `dataset`.

    `cosine` decays to 0 over the run after a linear warm-up; `step` multiplies the rate by
    `step_factor` at each boundary (He et al. 2016: divide by 10 at 32k and 48k of 64k
    iterations); `exponential` multiplies it by `step_factor` after every epoch (or
    iteration: the recipe's unit; Jégou et al. 2017: 0.995 per epoch); `constant` and `plateau` start at the rate.
    """
    plan = plan or plan_layout(config, steps_per_epoch, dataset)
    rate, warmup = config.learning_rate, plan.warmup_steps
    fixed_warmup = bool(warmup) and config.warmup_learning_rate is not None
    if config.schedule == "cosine" and not fixed_warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate, decay_steps=max(1, plan.total_steps - warmup),
            warmup_target=rate if warmup else None, warmup_steps=warmup)
    if config.schedule in ("constant", "plateau") and not warmup:
        return rate
    decay = "step" if config.schedule == "exponential" else config.schedule  # a step every unit
    return PaperSchedule(rate, plan.total_steps, decay=decay, boundaries=plan.boundaries,
                         factor=config.step_factor, warmup_steps=warmup,
                         warmup_learning_rate=config.warmup_learning_rate)


def schedule_of(optimizer):
    """The learning-rate schedule an optimizer runs (None for a plain rate); looks through
    a mixed-precision `LossScaleOptimizer`. Keras keeps it in `_learning_rate` (the public
    `learning_rate` is the current value)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None


__all__ = ["PaperSchedule", "learning_rate_schedule", "schedule_of"]
