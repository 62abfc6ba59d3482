"""The losses of segmentation training: per-pixel cross-entropy and soft Dice.

A segmentation batch of the data pipeline is ``(images, masks, pixel_weights)``: masks
int32 ``(B, H, W)`` with ignored (void) pixels replaced by 0, pixel weights float32
``(B, H, W)``, 0 at ignored pixels and the class weights folded in elsewhere. Keras hands
the weights to the loss as its ``sample_weight``; the model's output is softmax
probabilities ``(B, H, W, K)``.

- `PixelCrossEntropy`: the mean of ``-log p[label]`` weighted as PyTorch's
  ``CrossEntropyLoss(weight=w, ignore_index=i, reduction="mean")`` averages: the sum of
  the weighted losses divided by the sum of the weights (Keras' own
  ``"mean_with_sample_weight"`` reduction, which is exactly that), so an ignored pixel
  counts neither above nor below the line. Label smoothing as PyTorch's and Keras':
  target ``(1 - s)`` on the label plus ``s / K`` on every class.
- `DiceLoss`: soft Dice (Milletari et al. 2016, V-Net §3; segmentation_models_pytorch's
  ``DiceLoss(mode="multiclass")``): per class c over the whole batch,
  ``1 - 2·Σ p_c·t_c / (Σ p_c + Σ t_c)`` with the sums over the pixels of weight > 0
  (ignored pixels take no part; the class weights do not scale Dice), averaged over the
  classes present in the batch's labels. smp zeroes an absent class's term but still
  divides by all K; here the mean is over the present classes only, so the loss does not
  shrink with the number of classes a batch happens to lack.
- `CrossEntropyDiceLoss`: their sum (``"ce+dice"``, the combination smp and nnU-Net use).

`segmentation_loss(name, label_smoothing)` is what the training engine calls.
"""

from __future__ import annotations

import keras
from keras import ops

from cnnbuilder.errors import CnnBuilderError

__all__ = ["LOSSES", "CrossEntropyDiceLoss", "DiceLoss", "PixelCrossEntropy",
           "segmentation_loss"]

LOSSES = ("ce", "dice", "ce+dice")
# Keeps 0/0 (no pixel of weight > 0) finite; smp's clamp_min(eps).
_EPSILON = 1e-7


def _one_hot(y_true, y_pred):
    """Integer masks (B, H, W) (or (B, H, W, 1)) as one-hot rows of `y_pred`'s dtype."""
    labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
    return ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)


def _pixel_mask(sample_weight, y_pred):
    """1.0 at pixels of weight > 0 (all pixels without weights), shape (B, H, W, 1)."""
    if sample_weight is None:
        return ops.ones_like(y_pred[..., :1])
    weights = ops.reshape(ops.cast(sample_weight, y_pred.dtype), ops.shape(y_pred)[:-1])
    return ops.expand_dims(ops.cast(weights > 0, y_pred.dtype), -1)


def _scaled_for_distribution(value):
    """`value` divided by the replicas of the TF distribution strategy in scope, as Keras'
    own reductions scale a loss (the replicas' gradients are summed, and the trainer
    unscales the logged value); unchanged on one device and on other backends."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value * (1.0 / replicas)
    return value


@keras.saving.register_keras_serializable(package="cnnbuilder")
class PixelCrossEntropy(keras.losses.Loss):
    """Per-pixel cross-entropy of integer masks against softmax probabilities, averaged
    as PyTorch's weighted ``CrossEntropyLoss`` (sum of weighted losses / sum of weights).

    Args:
        label_smoothing: s in [0, 1): targets ``(1 - s)·onehot + s / K``.
        name, reduction, dtype: as `keras.losses.Loss`; the default reduction
            ``"mean_with_sample_weight"`` divides by the sum of the pixel weights.
    """

    def __init__(self, label_smoothing: float = 0.0, name="pixel_cross_entropy",
                 reduction="mean_with_sample_weight", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Per-pixel losses (B, H, W); Keras applies the weights and the reduction."""
        return keras.losses.categorical_crossentropy(
            _one_hot(y_true, y_pred), y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        """The config Keras saves (label smoothing included)."""
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def soft_dice_loss(y_true, y_pred, sample_weight=None):
    """``1 - mean over present classes of 2·Σ p·t / (Σ p + Σ t)``, sums over the batch's
    pixels of weight > 0 (see the module docstring); a scalar tensor."""
    mask = _pixel_mask(sample_weight, y_pred)
    targets = _one_hot(y_true, y_pred) * mask
    probabilities = y_pred * mask
    axes = tuple(range(len(y_pred.shape) - 1))  # all but the class axis
    intersection = ops.sum(probabilities * targets, axis=axes)
    cardinality = ops.sum(probabilities + targets, axis=axes)
    dice = 2.0 * intersection / ops.maximum(cardinality, _EPSILON)
    present = ops.cast(ops.sum(targets, axis=axes) > 0, y_pred.dtype)
    return ops.sum((1.0 - dice) * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="cnnbuilder")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss over the batch (Milletari et al. 2016), weight-0 pixels ignored,
    averaged over the classes present in the labels (see the module docstring).

    Dice is a ratio of sums over the whole batch, not a mean of per-pixel terms, so the
    pixel weights select pixels (weight > 0) instead of scaling per-pixel losses.
    """

    def __init__(self, name="dice", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The scalar loss of a batch (`sample_weight`: the pixel weights)."""
        with keras.name_scope(self.name):
            y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
            return _scaled_for_distribution(soft_dice_loss(y_true, y_pred, sample_weight))

    def call(self, y_true, y_pred):
        """The loss of a batch without pixel weights."""
        return soft_dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="cnnbuilder")
class CrossEntropyDiceLoss(keras.losses.Loss):
    """`PixelCrossEntropy` plus `DiceLoss` on the same batch and pixel weights."""

    def __init__(self, label_smoothing: float = 0.0, name="ce_dice",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)
        self._cross_entropy = PixelCrossEntropy(label_smoothing, dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Cross-entropy (weighted mean) + soft Dice of the batch."""
        with keras.name_scope(self.name):
            y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
            # The cross-entropy's reduction scales it for distribution already.
            return (self._cross_entropy(y_true, y_pred, sample_weight)
                    + _scaled_for_distribution(soft_dice_loss(y_true, y_pred, sample_weight)))

    def call(self, y_true, y_pred):
        """The loss of a batch without pixel weights."""
        return self(y_true, y_pred)

    def get_config(self) -> dict:
        """The config Keras saves (label smoothing included)."""
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def segmentation_loss(name: str = "ce", label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The loss a segmentation run trains with.

    Args:
        name: ``"ce"`` (per-pixel cross-entropy), ``"dice"`` (soft Dice) or
            ``"ce+dice"`` (their sum).
        label_smoothing: s in [0, 1) for the cross-entropy; Dice takes none.

    Raises:
        CnnBuilderError: an unknown name, a smoothing outside [0, 1), or smoothing asked
            of the Dice loss alone.
    """
    if name not in LOSSES:
        raise CnnBuilderError(
            f"Unknown segmentation loss {name!r}; expected one of {', '.join(LOSSES)} "
            "(per-pixel cross-entropy, soft Dice, or their sum).")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0 <= label_smoothing < 1:
        raise CnnBuilderError(
            f"The segmentation loss's label_smoothing must be a number in [0, 1), got "
            f"{label_smoothing!r}.")
    if name == "dice":
        if label_smoothing:
            raise CnnBuilderError(
                f"label_smoothing {label_smoothing:g} applies to cross-entropy; the Dice loss "
                "takes none. Use loss 'ce+dice' to smooth its cross-entropy part, or set "
                "label_smoothing to 0.")
        return DiceLoss()
    if name == "ce":
        return PixelCrossEntropy(label_smoothing)
    return CrossEntropyDiceLoss(label_smoothing)
