"""The optimizer, weight decay, loss and compile step of a training run.

Weight decay comes in two modes (`weight_decay_mode`):

- ``l2``: ``wd·w`` is added to the gradient of every trainable variable (kernels, biases,
  BatchNorm scales and offsets) before momentum, as `torch.optim.SGD`'s `weight_decay`
  and Caffe's, which the papers' code used. `TorchSGD` is SGD exactly as Torch's
  (velocity ``v = μ·v + g``, step ``w -= lr·v``, or ``lr·(g + μ·v)`` with Nesterov);
  `L2Adam` and `L2RMSprop` add the same term to the gradient of Keras' Adam and RMSprop.
- ``decoupled``: Keras' own `weight_decay` (``w -= lr·wd·w`` beside the update, AdamW's).

At momentum 0.9 the l2 decay acts about ten times as strongly as the same number
decoupled, because it goes through the momentum.
"""

from __future__ import annotations

import keras
from keras import ops

from cnnbuilder.recipe.training import TrainingConfig
from cnnbuilder.recipe.training_plan import Layout, layout as plan_layout
from cnnbuilder.training.losses import training_loss
from cnnbuilder.training.schedules import learning_rate_schedule


def _with_l2(gradient, variable, l2: float):
    gradient = ops.cast(gradient, variable.dtype)
    if not l2:
        return gradient
    return ops.add(gradient, ops.multiply(ops.cast(l2, variable.dtype), variable))


@keras.saving.register_keras_serializable(package="cnnbuilder")
class TorchSGD(keras.optimizers.SGD):
    """SGD as `torch.optim.SGD` (dampening 0): the gradient plus ``l2_decay·w``, a velocity
    of gradients ``v = μ·v + g``, and ``w -= lr·v`` (``w -= lr·(g + μ·v)`` with Nesterov).

    With a constant rate this is Keras' SGD; when the rate drops (a step schedule) the
    whole next step is smaller at once, where Keras' velocity, which holds ``lr·g``, still
    carries the old rate for a while.

    Args:
        learning_rate, momentum, nesterov, name, **kwargs: as `keras.optimizers.SGD`
            (leave its `weight_decay` None: that is the decoupled decay).
        l2_decay: the coupled weight decay wd.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2_decay=0.0,
                 name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = _with_l2(gradient, variable, self.l2_decay)
        if self.momentum != 0:
            velocity = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, variable.dtype)
            self.assign(velocity, ops.add(ops.multiply(velocity, momentum), gradient))
            gradient = (ops.add(gradient, ops.multiply(velocity, momentum)) if self.nesterov
                        else velocity)
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self) -> dict:
        return {**super().get_config(), "l2_decay": self.l2_decay}


class _L2Gradient:
    """Adds ``l2_decay·w`` to the gradient before the optimizer's own update."""

    def __init__(self, *args, l2_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2_decay = float(l2_decay)

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(_with_l2(gradient, variable, self.l2_decay), variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2_decay": self.l2_decay}


@keras.saving.register_keras_serializable(package="cnnbuilder")
class L2Adam(_L2Gradient, keras.optimizers.Adam):
    """Keras' Adam with l2 weight decay (``l2_decay·w`` added to the gradient), as
    `torch.optim.Adam`'s `weight_decay`."""


@keras.saving.register_keras_serializable(package="cnnbuilder")
class L2RMSprop(_L2Gradient, keras.optimizers.RMSprop):
    """Keras' RMSprop with l2 weight decay (``l2_decay·w`` added to the gradient)."""


def make_optimizer(config: TrainingConfig, steps_per_epoch: int, dataset: str = "",
                   plan: Layout | None = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer `config` names, with its schedule and weight decay in its mode."""
    schedule = learning_rate_schedule(config, steps_per_epoch, dataset, plan)
    l2 = config.weight_decay if config.weight_decay_mode == "l2" else 0.0
    decoupled = None if l2 else (config.weight_decay or None)
    if config.optimizer == "sgd":
        if config.weight_decay_mode == "l2":
            return TorchSGD(schedule, momentum=config.momentum, nesterov=config.nesterov,
                            l2_decay=l2)
        return keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=config.nesterov,
                                    weight_decay=decoupled)
    if config.optimizer == "adam":
        return L2Adam(schedule, l2_decay=l2) if l2 else keras.optimizers.Adam(schedule, weight_decay=decoupled)
    if config.optimizer == "adamw":  # l2 is refused when the settings are checked
        return keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    if l2:
        return L2RMSprop(schedule, momentum=config.momentum, l2_decay=l2)
    return keras.optimizers.RMSprop(schedule, momentum=config.momentum, weight_decay=decoupled)


def loss_and_metrics(label_smoothing: float = 0.0) -> dict:
    """The loss and metrics every cnnbuilder model is trained and evaluated with
    (integer labels; the accuracy is logged as ``accuracy`` / ``val_accuracy``)."""
    return {
        "loss": training_loss(label_smoothing),
        "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    }


def compile_model(model: keras.Model, config: TrainingConfig, steps_per_epoch: int, *,
                  jit: bool = False, dataset: str = "", plan: Layout | None = None) -> None:
    """Compile `model` for training with `config` over epochs of `steps_per_epoch` steps
    on `dataset` (its name decides whether an iterations-long recipe runs its iterations;
    `plan`, the run's `Layout`, when the caller has it already)."""
    plan = plan or plan_layout(config, steps_per_epoch, dataset)
    # On TensorFlow the step is a compiled graph either way and `jit` adds XLA; on JAX a
    # step without jax.jit runs op by op (1.8x slower for resnet20, benchmarks/results.md),
    # so JAX always compiles it.
    jit_compile = bool(jit) or keras.backend.backend() == "jax"
    model.compile(optimizer=make_optimizer(config, steps_per_epoch, dataset, plan),
                  jit_compile=jit_compile, **loss_and_metrics(config.label_smoothing))


def portable_compile(model: keras.Model, config: TrainingConfig) -> None:
    """Compile `model` as the finished run's ``model.keras`` carries its training: the
    run's optimizer family with its settings, from Keras alone, so the file loads with
    `keras.saving.load_model(safe_mode=True)` where cnnbuilder is not installed.

    Keras' own SGD, Adam, AdamW or RMSprop at the run's base learning rate, momentum and
    Nesterov, with the decoupled weight decay when the run used it (Keras has no ``l2``
    mode: such a run's file carries none; `TorchSGD` and the schedule stay in the resume
    checkpoints); plain sparse cross-entropy (Keras' has no label smoothing) and the
    accuracy. The optimizer is built, so the file holds its variables and loads without
    Keras' "Skipping variable loading for optimizer" warning.
    """
    rate = float(config.learning_rate)
    decoupled = config.weight_decay or None if config.weight_decay_mode == "decoupled" else None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=decoupled)
    elif config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate, weight_decay=decoupled)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.RMSprop(rate, momentum=config.momentum,
                                             weight_decay=decoupled)
    model.compile(optimizer=optimizer, **loss_and_metrics())
    model.optimizer.build(model.trainable_variables)
