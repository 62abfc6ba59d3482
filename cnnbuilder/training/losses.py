"""The training loss: cross-entropy on integer labels, with label smoothing when asked."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cnnbuilder")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against softmax outputs, the labels smoothed:
    the target is ``(1 - s)`` on the true class plus ``s / classes`` on every class
    (Szegedy et al. 2016, §7), as `keras.losses.CategoricalCrossentropy(label_smoothing=s)`
    on one-hot labels. Keras 3's sparse cross-entropy has no smoothing of its own.

    Args:
        label_smoothing: s in [0, 1).
        name, reduction, dtype: as `keras.losses.Loss`.
    """

    def __init__(self, label_smoothing: float = 0.0, name="sparse_categorical_crossentropy",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        one_hot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _targets(y_true, y_pred):
    """`y_true` as rows of class probabilities: soft targets (mixup/CutMix, rank of
    `y_pred`) as they are, integer labels one-hot. The rank is static, so the training
    function (soft targets) and the evaluation one (labels) each trace one branch."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]:
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
    return ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="cnnbuilder")
class SoftTargetLoss(keras.losses.Loss):
    """Cross-entropy (``ce``) or binary cross-entropy (``bce``, Wightman et al. 2021) of
    softmax outputs against soft targets (the mixed rows of mixup/CutMix) or integer
    labels (validation, evaluation), the targets smoothed by `label_smoothing` first.

    ``bce`` sums the per-class binary cross-entropies of the outputs (the mean over
    classes times their count, timm's BCE scale), on the softmax outputs the network's
    head gives: its evaluation and export stay those of a softmax classifier.

    Args:
        kind: "ce" or "bce".
        label_smoothing: s in [0, 1): targets (1 - s)·t + s / classes.
        name, reduction, dtype: as `keras.losses.Loss`.
    """

    def __init__(self, kind: str = "ce", label_smoothing: float = 0.0, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or f"soft_target_{kind}", reduction=reduction, dtype=dtype)
        self.kind = kind
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Per-example loss of the (smoothed) targets against the softmax outputs."""
        targets = _targets(y_true, y_pred)
        if self.label_smoothing:
            classes = ops.cast(ops.shape(y_pred)[-1], y_pred.dtype)
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        if self.kind == "bce":
            per_class = keras.losses.binary_crossentropy(
                ops.expand_dims(targets, -1), ops.expand_dims(y_pred, -1))
            return ops.sum(per_class, axis=-1)
        return keras.losses.categorical_crossentropy(targets, y_pred)

    def get_config(self) -> dict:
        """The config Keras saves (kind and label smoothing included)."""
        return {**super().get_config(), "kind": self.kind, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="cnnbuilder")
class SoftTargetAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy against integer labels or soft targets: the prediction's top class equals
    the target's (for a mixed row, its larger part's class), so the logged training
    accuracy of a mixup/CutMix run is that of the dominant label."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=_soft_accuracy, name=name, dtype=dtype)

    def get_config(self) -> dict:
        """Name and dtype: the function is fixed."""
        return {"name": self.name, "dtype": self.dtype}


def _soft_accuracy(y_true, y_pred):
    """1.0 where argmax of the prediction is argmax of the target, per example."""
    labels = ops.argmax(_targets(y_true, y_pred), axis=-1)
    return ops.cast(ops.equal(labels, ops.argmax(y_pred, axis=-1)), "float32")


def training_loss(label_smoothing: float = 0.0, kind: str = "sparse_ce") -> keras.losses.Loss:
    """Keras' sparse cross-entropy (or the smoothed one when `label_smoothing` > 0) for
    integer labels; `SoftTargetLoss` for the ``ce`` of a run with soft targets and for ``bce``."""
    if kind in ("ce", "bce"):
        return SoftTargetLoss(kind, label_smoothing)
    if label_smoothing:
        return SmoothedSparseCategoricalCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


__all__ = ["SmoothedSparseCategoricalCrossentropy", "SoftTargetAccuracy", "SoftTargetLoss",
           "training_loss"]
