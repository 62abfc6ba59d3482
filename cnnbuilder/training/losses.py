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


def training_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Keras' sparse cross-entropy, or the smoothed one when `label_smoothing` > 0."""
    if label_smoothing:
        return SmoothedSparseCategoricalCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


__all__ = ["SmoothedSparseCategoricalCrossentropy", "training_loss"]
