"""Segmentation losses and metrics against NumPy (and PyTorch) references: per-pixel
cross-entropy averaged as PyTorch's weighted CrossEntropyLoss with an ignore index, soft
Dice over the pixels of weight > 0, mean IoU and pixel accuracy that count every
non-ignored pixel once whatever its class weight."""

from __future__ import annotations

import numpy as np
import pytest

import keras

from cnnbuilder.errors import CnnBuilderError
from cnnbuilder.training.segmentation_losses import (
    CrossEntropyDiceLoss,
    DiceLoss,
    PixelCrossEntropy,
    segmentation_loss,
)
from cnnbuilder.training.segmentation_metrics import (
    confusion_matrix,
    dataset_confusion_matrix,
    iou_per_class,
    mean_iou,
    named_iou,
    segmentation_metrics,
    segmentation_test_metrics,
)

CLASSES = 4
VOID = 255


def _batch(seed=0, shape=(3, 8, 8)):
    """(raw labels with VOID pixels, masks with VOID -> 0, class weights, pixel weights,
    softmax probabilities) of a random batch, as the data pipeline gives them."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, CLASSES, shape)
    raw[rng.random(shape) < 0.2] = VOID
    class_weights = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    masks = np.where(raw == VOID, 0, raw).astype(np.int32)
    weights = np.where(raw == VOID, 0.0, class_weights[masks]).astype(np.float32)
    logits = rng.normal(size=(*shape, CLASSES)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return raw, masks, class_weights, weights, probabilities.astype(np.float32)


def _reference_ce(raw, class_weights, probabilities, smoothing=0.0):
    """PyTorch CrossEntropyLoss(weight, ignore_index, label_smoothing) in NumPy: per pixel
    w[y]·(-(1-s)·log p_y - s/K·Σ_c log p_c), summed, divided by Σ w[y] over kept pixels."""
    keep = raw != VOID
    labels = raw[keep]
    logp = np.log(probabilities[keep].astype(np.float64))
    w = class_weights[labels]
    nll = -logp[np.arange(len(labels)), labels]
    smooth = -logp.mean(axis=-1)
    loss = (1 - smoothing) * nll + smoothing * smooth
    return float((w * loss).sum() / w.sum())


def _reference_dice(raw, probabilities):
    """1 - mean over classes present of 2Σpt/(Σp+Σt), over the non-void pixels."""
    keep = raw != VOID
    p = probabilities[keep].astype(np.float64)
    t = np.eye(CLASSES)[raw[keep]]
    dice = 2 * (p * t).sum(0) / (p.sum(0) + t.sum(0))
    present = t.sum(0) > 0
    return float((1 - dice)[present].mean())


def test_cross_entropy_matches_pytorch_weighted_mean_with_ignored_pixels():
    raw, masks, class_weights, weights, probabilities = _batch()
    loss = PixelCrossEntropy()(masks, probabilities, sample_weight=weights)
    assert float(loss) == pytest.approx(_reference_ce(raw, class_weights, probabilities), rel=1e-5)
    # Not the plain mean over all pixels (the weights and the ignored pixels matter).
    assert float(loss) != pytest.approx(float(PixelCrossEntropy()(masks, probabilities)), rel=1e-3)


def test_cross_entropy_label_smoothing_matches_reference():
    raw, masks, class_weights, weights, probabilities = _batch(1)
    loss = segmentation_loss("ce", label_smoothing=0.1)(masks, probabilities, sample_weight=weights)
    assert float(loss) == pytest.approx(
        _reference_ce(raw, class_weights, probabilities, 0.1), rel=1e-5)


def test_cross_entropy_equals_torch_cross_entropy_loss():
    torch = pytest.importorskip("torch")
    from torch_reference import block_triton

    block_triton()
    raw, masks, class_weights, weights, probabilities = _batch(2)

    def torch_loss(class_weights, smoothing):
        return float(torch.nn.functional.cross_entropy(
            torch.from_numpy(np.log(probabilities)).permute(0, 3, 1, 2),
            torch.from_numpy(raw.astype(np.int64)), weight=torch.from_numpy(class_weights),
            ignore_index=VOID, label_smoothing=smoothing))

    loss = segmentation_loss("ce")(masks, probabilities, sample_weight=weights)
    assert float(loss) == pytest.approx(torch_loss(class_weights, 0.0), rel=1e-5)
    # Smoothing, unit class weights (PyTorch weights the smoothed part per class c by
    # w_c, here the whole pixel loss by w[label]: they agree when the weights are equal).
    unit = (raw != VOID).astype(np.float32)
    loss = segmentation_loss("ce", 0.05)(masks, probabilities, sample_weight=unit)
    assert float(loss) == pytest.approx(torch_loss(np.ones(CLASSES, np.float32), 0.05), rel=1e-5)


def test_dice_ignores_weight_zero_pixels_and_absent_classes():
    raw, masks, _, weights, probabilities = _batch(3)
    raw[raw == 3] = VOID  # class 3 absent from the labels: not in the mean
    masks = np.where(raw == VOID, 0, raw).astype(np.int32)
    weights = np.where(raw == VOID, 0.0, weights).astype(np.float32)
    loss = DiceLoss()(masks, probabilities, sample_weight=weights)
    assert float(loss) == pytest.approx(_reference_dice(raw, probabilities), rel=1e-5)
    # The class weights select pixels for Dice, they do not scale it.
    ones = (weights > 0).astype(np.float32)
    assert float(DiceLoss()(masks, probabilities, sample_weight=ones)) == pytest.approx(float(loss), rel=1e-6)


def test_dice_of_a_perfect_prediction_is_zero():
    _, masks, _, weights, _ = _batch(4)
    perfect = np.eye(CLASSES, dtype=np.float32)[masks]
    assert float(DiceLoss()(masks, perfect, sample_weight=weights)) == pytest.approx(0.0, abs=1e-6)


def test_ce_plus_dice_is_their_sum():
    raw, masks, class_weights, weights, probabilities = _batch(5)
    loss = segmentation_loss("ce+dice")(masks, probabilities, sample_weight=weights)
    expected = _reference_ce(raw, class_weights, probabilities) + _reference_dice(raw, probabilities)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", [PixelCrossEntropy(0.1), DiceLoss(), CrossEntropyDiceLoss(0.2)])
def test_losses_serialize(loss):
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(revived) is type(loss)
    assert getattr(revived, "label_smoothing", None) == getattr(loss, "label_smoothing", None)


@pytest.mark.parametrize("name, smoothing", [("focal", 0.0), ("ce", 1.0), ("dice", 0.1), ("ce", True)])
def test_bad_loss_arguments_are_refused(name, smoothing):
    with pytest.raises(CnnBuilderError):
        segmentation_loss(name, smoothing)


def _reference_miou(raw, predicted):
    """Mean IoU over non-void pixels, each counted once, classes with a union only."""
    keep = raw != VOID
    ious = []
    for c in range(CLASSES):
        t, p = raw[keep] == c, predicted[keep] == c
        union = np.sum(t | p)
        if union:
            ious.append(np.sum(t & p) / union)
    return float(np.mean(ious))


def test_keras_metrics_equal_numpy_over_non_ignored_pixels():
    raw, masks, _, weights, probabilities = _batch(6)
    predicted = probabilities.argmax(-1)
    iou, accuracy = segmentation_metrics(CLASSES)
    assert (iou.name, accuracy.name) == ("mean_iou", "pixel_accuracy")
    # Two batches: the state accumulates.
    for part in (slice(0, 1), slice(1, None)):
        iou.update_state(masks[part], probabilities[part], sample_weight=weights[part])
        accuracy.update_state(masks[part], probabilities[part], sample_weight=weights[part])
    assert float(iou.result()) == pytest.approx(_reference_miou(raw, predicted), rel=1e-5)
    keep = raw != VOID
    assert float(accuracy.result()) == pytest.approx(float(np.mean(predicted[keep] == raw[keep])), rel=1e-6)


def test_numpy_confusion_matrix_and_per_class_iou():
    raw, masks, _, weights, probabilities = _batch(7)
    predicted = probabilities.argmax(-1)
    confusion = confusion_matrix(masks, predicted, CLASSES, weights)
    assert confusion.sum() == np.sum(raw != VOID)
    assert mean_iou(confusion) == pytest.approx(_reference_miou(raw, predicted), rel=1e-9)
    keep = raw != VOID
    for c, value in enumerate(iou_per_class(confusion)):
        t, p = raw[keep] == c, predicted[keep] == c
        assert value == pytest.approx(np.sum(t & p) / np.sum(t | p))
    names = named_iou(confusion, ["a", "b", "c", "d"])
    assert list(names) == ["a", "b", "c", "d"]
    # A class neither labelled nor predicted has no IoU.
    assert np.isnan(iou_per_class(np.diag([3, 0]))[1])
    # Over batches, through a model-like function: the same matrix.
    batches = [(probabilities[i:i + 1], masks[i:i + 1], weights[i:i + 1]) for i in range(len(masks))]
    assert np.array_equal(dataset_confusion_matrix(lambda x: x, batches, CLASSES), confusion)
    entries = segmentation_test_metrics(lambda x: x, batches, ["a", "b", "c", "d"])
    assert entries["test_mean_iou"] == pytest.approx(_reference_miou(raw, predicted))
    assert entries["test_pixel_accuracy"] == pytest.approx(np.mean(predicted[keep] == raw[keep]))
    assert entries["test_iou_per_class"] == names


@pytest.mark.slow
def test_fit_logs_mean_iou_with_weighted_metrics():
    raw, masks, _, weights, _ = _batch(8, shape=(8, 8, 8))
    images = np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32)
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(CLASSES, 3, padding="same", activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", loss=segmentation_loss("ce+dice"),
                  weighted_metrics=segmentation_metrics(CLASSES))
    history = model.fit(images, masks, sample_weight=weights, validation_data=(images, masks, weights),
                        epochs=1, batch_size=8, verbose=0)
    assert {"mean_iou", "pixel_accuracy", "val_mean_iou", "val_pixel_accuracy"} <= set(history.history)
    predicted = np.argmax(model.predict(images, verbose=0), -1)
    assert history.history["val_mean_iou"][0] == pytest.approx(_reference_miou(raw, predicted), rel=1e-4)
