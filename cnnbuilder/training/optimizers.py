"""The optimizer, learning-rate schedule and compile step of a training run."""

from __future__ import annotations

import keras

from cnnbuilder.recipe.training import TrainingConfig


def learning_rate_schedule(config: TrainingConfig, steps_per_epoch: int):
    """The learning rate of `config` as a Keras schedule over the run's optimizer steps.

    `cosine` decays to 0 over the whole run after a linear warm-up of `warmup_epochs`;
    `step` multiplies the rate by `step_factor` at each fraction `step_at` of the run
    (He et al. 2016: divide by 10 at 32k and 48k of 64k iterations); `constant` is the rate.
    """
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


def make_optimizer(config: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer `config` names, with its schedule and weight decay."""
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


def loss_and_metrics() -> dict:
    """The loss and metrics every cnnbuilder model is trained and evaluated with
    (integer labels; the accuracy is logged as ``accuracy`` / ``val_accuracy``)."""
    return {
        "loss": keras.losses.SparseCategoricalCrossentropy(),
        "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    }


def compile_model(model: keras.Model, config: TrainingConfig, steps_per_epoch: int, *,
                  jit: bool = False) -> None:
    """Compile `model` for training with `config` over epochs of `steps_per_epoch` steps."""
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), jit_compile=bool(jit),
                  **loss_and_metrics())
