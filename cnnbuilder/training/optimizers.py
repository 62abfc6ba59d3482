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

``ema`` is Keras' own exponential moving average of the trainable weights (the optimizer's
`use_ema`/`ema_momentum`): after every step ``average = d·average + (1 - d)·w``, the first
step's average being the weights themselves. Its averages are optimizer variables, so the
resume checkpoints hold them and a resumed run goes on with them exactly; with
``warmup: true`` the decay of step t is min(d, (1 + t) / (10 + t)) (TensorFlow's
`ExponentialMovingAverage` with `num_updates`), through the `EMAWarmup` classes.
"""

from __future__ import annotations

import keras
from keras import ops

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.training import SEGMENTATION_LOSSES, TrainingConfig, soft_targets
from cnnbuilder.recipe.training_plan import Layout, layout as plan_layout
from cnnbuilder.training.losses import SoftTargetAccuracy, training_loss
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


class EMAWarmup:
    """Mixed into an optimizer class: the weights' moving average decays with
    min(ema_momentum, (1 + t) / (10 + t)) at step t, so the early average is not held
    back by the random initial weights (TensorFlow's `ExponentialMovingAverage` with
    `num_updates`). The first step's average is the weights themselves, as Keras'."""

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras' EMA update with the warmed-up decay of this step."""
        if not self.use_ema:
            return
        step = ops.cast(self.iterations, "float32")
        decay = ops.minimum(ops.cast(self.ema_momentum, "float32"), (1.0 + step) / (10.0 + step))
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is None:
                continue
            momentum = ops.cast(ops.not_equal(self.iterations, 0), var.dtype) * ops.cast(decay, var.dtype)
            average.assign(ops.add(ops.multiply(momentum, average),
                                   ops.multiply(ops.subtract(1, momentum), var)))


# The EMAWarmup form of every optimizer class a run can use, registered for loading.
_WARMUP_CLASSES = {}
for _base in (keras.optimizers.SGD, TorchSGD, keras.optimizers.Adam, L2Adam,
              keras.optimizers.AdamW, keras.optimizers.RMSprop, L2RMSprop, keras.optimizers.Lamb):
    _WARMUP_CLASSES[_base] = keras.saving.register_keras_serializable(package="cnnbuilder")(
        type(f"EMAWarmup{_base.__name__}", (EMAWarmup, _base),
             {"__doc__": f"{_base.__name__} whose weight average warms up (`EMAWarmup`)."}))


def make_optimizer(config: TrainingConfig, steps_per_epoch: int, dataset: str = "",
                   plan: Layout | None = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer `config` names, with its schedule, weight decay in its mode and
    the weights' moving average (``ema``)."""
    schedule = learning_rate_schedule(config, steps_per_epoch, dataset, plan)
    l2 = config.weight_decay if config.weight_decay_mode == "l2" else 0.0
    decoupled = None if l2 else (config.weight_decay or None)
    if config.optimizer == "sgd":
        if config.weight_decay_mode == "l2":
            cls, kwargs = TorchSGD, dict(momentum=config.momentum, nesterov=config.nesterov, l2_decay=l2)
        else:
            cls, kwargs = keras.optimizers.SGD, dict(momentum=config.momentum, nesterov=config.nesterov,
                                                     weight_decay=decoupled)
    elif config.optimizer == "adam":
        cls, kwargs = (L2Adam, dict(l2_decay=l2)) if l2 else (keras.optimizers.Adam, dict(weight_decay=decoupled))
    elif config.optimizer == "adamw":  # l2 is refused when the settings are checked
        cls, kwargs = keras.optimizers.AdamW, dict(weight_decay=config.weight_decay)
    elif config.optimizer == "lamb":  # l2 is refused too: LAMB decays decoupled
        cls, kwargs = keras.optimizers.Lamb, dict(weight_decay=decoupled)
    elif l2:
        cls, kwargs = L2RMSprop, dict(momentum=config.momentum, l2_decay=l2)
    else:
        cls, kwargs = keras.optimizers.RMSprop, dict(momentum=config.momentum, weight_decay=decoupled)
    if config.ema:
        kwargs.update(use_ema=True, ema_momentum=float(config.ema["decay"]))
        if config.ema.get("warmup"):
            cls = _WARMUP_CLASSES[cls]
    return cls(schedule, **kwargs)


def loss_kind(config: TrainingConfig) -> str:
    """The loss a run trains with: Keras' sparse cross-entropy for integer labels
    (``sparse_ce``, and ``ce`` without mixing: the papers' runs, unchanged), else the
    soft-target ``ce`` or ``bce`` (`losses.SoftTargetLoss`)."""
    if config.loss == "bce" or (config.loss == "ce" and soft_targets(config)):
        return config.loss
    return "sparse_ce"


def loss_and_metrics(label_smoothing: float = 0.0, kind: str = "sparse_ce") -> dict:
    """The loss and metrics every cnnbuilder model is trained and evaluated with (the
    accuracy is logged as ``accuracy`` / ``val_accuracy``): for integer labels, or with
    `kind` ``ce``/``bce`` for soft targets too (`SoftTargetAccuracy` argmaxes them)."""
    if kind in ("ce", "bce"):
        return {"loss": training_loss(label_smoothing, kind), "metrics": [SoftTargetAccuracy()]}
    return {
        "loss": training_loss(label_smoothing),
        "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    }


def segmentation_loss_and_metrics(config: TrainingConfig, classes: int) -> dict:
    """The per-pixel loss (`config.loss`: ce, dice or ce+dice) and the metrics (``mean_iou``,
    ``pixel_accuracy``) of a segmentation run. The pipeline's third element, the pixel
    weights (0 at ignored pixels), reaches both as Keras' sample weights."""
    from cnnbuilder.training.segmentation_losses import segmentation_loss
    from cnnbuilder.training.segmentation_metrics import segmentation_metrics

    if config.loss not in SEGMENTATION_LOSSES:
        raise RecipeError(f"loss = {config.loss!r} is a classification loss; a segmentation "
                          f"run takes one of {', '.join(SEGMENTATION_LOSSES)}.")
    return {"loss": segmentation_loss(config.loss, config.label_smoothing),
            "weighted_metrics": segmentation_metrics(classes)}


def compile_model(model: keras.Model, config: TrainingConfig, steps_per_epoch: int, *,
                  jit: bool = False, dataset: str = "", plan: Layout | None = None,
                  segmentation_classes: int | None = None) -> None:
    """Compile `model` for training with `config` over epochs of `steps_per_epoch` steps
    on `dataset` (its name decides whether an iterations-long recipe runs its iterations;
    `plan`, the run's `Layout`, when the caller has it already); a segmentation model
    (`segmentation_classes` given) with the per-pixel loss and metrics."""
    plan = plan or plan_layout(config, steps_per_epoch, dataset)
    # On TensorFlow the step is a compiled graph either way and `jit` adds XLA; on JAX a
    # step without jax.jit runs op by op (1.8x slower for resnet20, benchmarks/results.md),
    # so JAX always compiles it.
    jit_compile = bool(jit) or keras.backend.backend() == "jax"
    if segmentation_classes:
        objective = segmentation_loss_and_metrics(config, segmentation_classes)
    else:
        objective = loss_and_metrics(config.label_smoothing, loss_kind(config))
    model.compile(optimizer=make_optimizer(config, steps_per_epoch, dataset, plan),
                  jit_compile=jit_compile, **objective)


def portable_compile(model: keras.Model, config: TrainingConfig, *,
                     segmentation_classes: int | None = None) -> None:
    """Compile `model` as the finished run's ``model.keras`` carries its training: the
    run's optimizer family with its settings, from Keras alone, so the file loads with
    `keras.saving.load_model(safe_mode=True)` where cnnbuilder is not installed.

    Keras' own SGD, Adam, AdamW, RMSprop or Lamb at the run's base learning rate, momentum
    and Nesterov, with the decoupled weight decay when the run used it (Keras has no ``l2``
    mode: such a run's file carries none; `TorchSGD` and the schedule stay in the resume
    checkpoints) and the moving average (``ema``: `use_ema` at its decay; a warm-up is
    not carried); plain sparse cross-entropy and the accuracy, for the integer labels the
    file's users have (Keras' has no label smoothing; a run's soft-target or BCE loss
    stays in the resume checkpoints). The optimizer is built, so the file holds its variables and loads without
    Keras' "Skipping variable loading for optimizer" warning. A segmentation model
    (`segmentation_classes` given) gets Keras' per-pixel cross-entropy, `MeanIoU` and
    accuracy, weighted by the pixel weights a caller passes (cnnbuilder's own, which leave
    ignored pixels out exactly, stay in the resume checkpoints).
    """
    rate = float(config.learning_rate)
    decoupled = config.weight_decay or None if config.weight_decay_mode == "decoupled" else None
    ema = dict(use_ema=True, ema_momentum=float(config.ema["decay"])) if config.ema else {}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=decoupled, **ema)
    elif config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate, weight_decay=decoupled, **ema)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, **ema)
    elif config.optimizer == "lamb":
        optimizer = keras.optimizers.Lamb(rate, weight_decay=decoupled, **ema)
    else:
        optimizer = keras.optimizers.RMSprop(rate, momentum=config.momentum,
                                             weight_decay=decoupled, **ema)
    if segmentation_classes:  # Keras' own: per-pixel cross-entropy, mean IoU, pixel accuracy
        objective = {"loss": keras.losses.SparseCategoricalCrossentropy(),
                     "weighted_metrics": [
                         keras.metrics.MeanIoU(segmentation_classes, sparse_y_pred=False,
                                               name="mean_iou"),
                         keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")]}
    else:
        objective = loss_and_metrics()
    model.compile(optimizer=optimizer, **objective)
    model.optimizer.build(model.trainable_variables)
