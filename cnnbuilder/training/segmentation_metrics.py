"""The metrics of segmentation training: mean IoU, pixel accuracy, per-class IoU.

`segmentation_metrics(classes)` gives the two metrics a segmentation run logs, named
``mean_iou`` and ``pixel_accuracy`` (so ``history.csv`` holds ``mean_iou`` and
``val_mean_iou``): Keras' own `keras.metrics.MeanIoU` (``sparse_y_pred=False``: the
argmax of the softmax output) and `keras.metrics.SparseCategoricalAccuracy`, each
counting only the pixels whose weight is > 0.

The pixel weights of a batch cannot be handed to them as they are: they carry the class
weights (a pixel of a rare class may weigh 5), and Keras' confusion matrix would then
count such a pixel five times, in its row (false negatives) and in the column of the
class it was mistaken for (that class's false positives), which is no longer IoU. So the
weights are made 0/1 (`_Selected`) before Keras sees them: ignored pixels drop out,
every other pixel counts once, as the VOC / Cityscapes evaluation counts them.

They must be compiled as ``weighted_metrics`` (``model.compile(...,
weighted_metrics=segmentation_metrics(K))``): Keras 3 passes the sample weights only to
those, and a metric in ``metrics=`` would count the ignored pixels.

`confusion_matrix` and `iou_per_class` are the NumPy side, for the test split's
per-class IoU in ``metrics.json`` (``test_iou_per_class``) and the model card;
`dataset_confusion_matrix` accumulates one over ``(images, masks, weights)`` batches, and
`segmentation_test_metrics` turns that into metrics.json's three test entries.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import keras
import numpy as np
from keras import ops

__all__ = ["PixelAccuracy", "SegmentationMeanIoU", "confusion_matrix",
           "dataset_confusion_matrix", "iou_per_class", "mean_iou", "named_iou",
           "segmentation_metrics", "segmentation_test_metrics"]


def _selected(sample_weight, dtype="float32"):
    """1 where the pixel weight is > 0, else 0, as `dtype`; None stays None."""
    if sample_weight is None:
        return None
    return ops.cast(ops.convert_to_tensor(sample_weight) > 0, dtype)


@keras.saving.register_keras_serializable(package="cnnbuilder")
class SegmentationMeanIoU(keras.metrics.MeanIoU):
    """`keras.metrics.MeanIoU` of softmax outputs (``sparse_y_pred=False``) over the
    pixels of weight > 0, each counted once whatever its class weight.

    Args:
        num_classes: K.
        name: ``mean_iou`` (the history column).
    """

    def __init__(self, num_classes: int, name="mean_iou", dtype=None, **kwargs):
        kwargs.pop("sparse_y_pred", None)
        super().__init__(num_classes=num_classes, name=name, dtype=dtype,
                         sparse_y_pred=False, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's pixels of weight > 0 to the confusion matrix (Keras keeps it in
        an integer dtype, to which a float class weight such as 0.5 would truncate)."""
        return super().update_state(y_true, y_pred,
                                    sample_weight=_selected(sample_weight, self.dtype))


@keras.saving.register_keras_serializable(package="cnnbuilder")
class PixelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """`keras.metrics.SparseCategoricalAccuracy` per pixel, over the pixels of weight > 0,
    each counted once: correctly classified pixels / counted pixels."""

    def __init__(self, name="pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's pixels of weight > 0."""
        return super().update_state(y_true, y_pred, sample_weight=_selected(sample_weight))


def segmentation_metrics(classes: int) -> list:
    """``[mean_iou, pixel_accuracy]`` metrics for a K-class segmentation model; compile
    them as ``weighted_metrics`` (see the module docstring)."""
    return [SegmentationMeanIoU(int(classes)), PixelAccuracy()]


def confusion_matrix(true_masks, predicted_masks, classes: int, weights=None) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class, over the pixels
    whose weight is > 0 (all pixels when `weights` is None).

    Args:
        true_masks, predicted_masks: integer arrays of one shape (B, H, W) or (H, W).
        classes: K; labels outside 0..K-1 at counted pixels raise ValueError.
        weights: pixel weights of the same shape, or None.
    """
    true = np.asarray(true_masks).reshape(-1).astype(np.int64)
    predicted = np.asarray(predicted_masks).reshape(-1).astype(np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"true and predicted masks differ in size: {np.shape(true_masks)} "
                         f"vs {np.shape(predicted_masks)}")
    if weights is not None:
        keep = np.asarray(weights).reshape(-1) > 0
        true, predicted = true[keep], predicted[keep]
    for what, values in (("true", true), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{what} labels outside 0..{classes - 1}: "
                             f"{sorted(set(values[(values < 0) | (values >= classes)].tolist()))[:10]}")
    return np.bincount(true * classes + predicted, minlength=classes * classes) \
        .reshape(classes, classes).astype(np.int64)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class, ``TP / (TP + FP + FN)``, from a (K, K) confusion matrix; NaN for
    a class that is neither in the labels nor predicted (it has no IoU)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """The mean of `iou_per_class` over the classes that have one (as Keras' MeanIoU)."""
    values = iou_per_class(confusion)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def dataset_confusion_matrix(predict: Callable, batches: Iterable, classes: int) -> np.ndarray:
    """The confusion matrix of `predict` over ``(images, masks[, weights])`` batches.

    Args:
        predict: a model, or any function from an image batch to (B, H, W, K) scores.
        batches: a tf.data dataset or an iterable of NumPy/tensor tuples.
        classes: K.
    """
    total = np.zeros((classes, classes), np.int64)
    for batch in batches:
        images, masks = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 else None
        scores = predict(images)
        predicted = np.argmax(np.asarray(scores), axis=-1)
        total += confusion_matrix(np.asarray(masks), predicted, classes,
                                  None if weights is None else np.asarray(weights))
    return total


def segmentation_test_metrics(predict: Callable, batches: Iterable,
                              class_names: Sequence[str]) -> dict:
    """The test split's segmentation entries of metrics.json, from one confusion matrix
    over `batches` (``(images, masks, weights)``, pixels of weight > 0):
    ``test_mean_iou``, ``test_pixel_accuracy`` and ``test_iou_per_class`` ({name: IoU or
    None}); the model card reads these keys. None where no pixel was counted.

    Args:
        predict: the model (called on each image batch) or a batch -> scores function.
        batches: the unaugmented test batches.
        class_names: the K class names, in class-index order.
    """
    confusion = dataset_confusion_matrix(predict, batches, len(class_names))
    total = int(confusion.sum())
    miou = mean_iou(confusion)
    return {
        "test_mean_iou": None if np.isnan(miou) else miou,
        "test_pixel_accuracy": float(np.trace(confusion)) / total if total else None,
        "test_iou_per_class": named_iou(confusion, class_names),
    }


def named_iou(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """``{class name: IoU}`` for metrics.json's ``test_iou_per_class`` (None where a
    class has no IoU: neither labelled nor predicted in the split)."""
    return {str(name): (None if np.isnan(value) else float(value))
            for name, value in zip(class_names, iou_per_class(confusion))}

