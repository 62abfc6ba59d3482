"""The pipeline of a segmentation split: batches of (images, masks, pixel weights).

`cnnbuilder.data.pipeline.make_pipeline` hands a split here when its labels are masks
(`is_segmentation_split`). Each batch is

- ``images``: float32 (B, H, W, C), exactly what `preprocess` makes of the stored images
  (the same function the export signature and predict apply);
- ``masks``: int32 (B, H, W), the stored masks resized to the model input's (H, W) with
  nearest-neighbour interpolation, the ignored pixels (the dataset's ``ignore_label``, and
  the padding a crop or translation brings in) replaced by 0;
- ``pixel_weights``: float32 (B, H, W), 0 at the ignored pixels and 1 elsewhere (or the
  ``class_weights`` entry of that pixel's class),

so Keras' standard losses and metrics (``SparseCategoricalCrossentropy``, ``MeanIoU``,
``SparseCategoricalAccuracy``) given the weights as ``sample_weight`` compute the per-pixel
loss with the ignore label left out. Keras passes a third tuple element to both.

Augmentation: ``crop``, ``translate`` and ``flip`` move pixels, so they are applied to the
image and its mask together, with the same random draws (the mask rides as an extra
channel through the very same op: shifts and flips only copy pixels, so the mask stays
exact, nearest-neighbour); ``random_erasing`` is photometric and touches the image only.
``randaugment`` (its rotations and shears interpolate), ``mixup`` and ``cutmix`` (they
blend labels) make no sense for masks and are refused. Order and augmentation remain
functions of (seed, epoch, position), as in `cnnbuilder.data.pipeline`.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from cnnbuilder.data.arrays import check_images
from cnnbuilder.data.augment import AUGMENTATIONS, _entry, augmentation_names, batch_seeds
from cnnbuilder.data.preprocess import normalize, preprocess
from cnnbuilder.data.segmentation import decode_pairs, segmentation_source
from cnnbuilder.data.splits import split_size
from cnnbuilder.errors import DataError

__all__ = ["JOINT_AUGMENTATIONS", "IMAGE_ONLY_AUGMENTATIONS", "is_segmentation_split",
           "make_segmentation_pipeline", "segmentation_augmentations"]

# Geometric: applied to image and mask together. Photometric: to the image only.
JOINT_AUGMENTATIONS = ("crop", "flip", "translate")
IMAGE_ONLY_AUGMENTATIONS = ("random_erasing",)


def is_segmentation_split(split) -> bool:
    """Whether a split's labels are masks: a folder segmentation split, a tf.data split of
    (image, (H, W) mask), or (x, y) arrays with y of shape (N, H, W)."""
    if isinstance(split, tf.data.Dataset):
        if segmentation_source(split) is not None:
            return True
        spec = split.element_spec
        return (isinstance(spec, tuple) and len(spec) == 2
                and getattr(spec[1], "shape", None) is not None and spec[1].shape.rank == 2)
    try:
        _, y = split
    except (TypeError, ValueError):
        return False
    return np.ndim(y) == 3


def segmentation_augmentations(augment) -> list:
    """`augment` entries checked for a segmentation split (see the module docstring).

    Raises:
        DataError: an augmentation that cannot keep a mask aligned with its image.
    """
    entries = [augment] if isinstance(augment, (str, dict)) else (augment or [])
    if isinstance(entries, (list, tuple)):
        refused = [e[0] for e in map(_entry, entries)
                   if e is not None and e[0] in AUGMENTATIONS
                   and e[0] not in JOINT_AUGMENTATIONS + IMAGE_ONLY_AUGMENTATIONS]
        if refused:
            raise DataError(
                f"Augmentation {', '.join(map(repr, refused))} cannot be used on a "
                "segmentation dataset: mixup and cutmix blend labels, and randaugment's "
                "rotations and shears interpolate, which a mask of class labels cannot follow. "
                f"Use {', '.join(JOINT_AUGMENTATIONS)} (applied to image and mask together) "
                f"and {', '.join(IMAGE_ONLY_AUGMENTATIONS)} (image only).")
    return augmentation_names(augment)


class _Arrays(NamedTuple):
    """An in-memory segmentation split: uint8 images and int32 masks, as tensors."""

    images: tf.Tensor
    masks: tf.Tensor


class _Pairs(NamedTuple):
    """A folder segmentation split: its file names as tensors, and how to decode them."""

    images: tf.Tensor
    masks: tf.Tensor
    channels: int
    size: tuple | None
    classes: object


def _in_tensors(split):
    """`_Arrays` (checked (x, masks) arrays), `_Pairs` (a folder split) or the stream."""
    if isinstance(split, tf.data.Dataset):
        source = segmentation_source(split)
        if source is None:
            return split
        images, masks, channels, size, classes = source
        return _Pairs(tf.constant(images.astype(str)), tf.constant(masks.astype(str)),
                      channels, size, classes)
    x, y = split
    x, y = np.asarray(x), np.asarray(y)
    if len(x):
        x = check_images(x, "the segmentation split")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != x.shape[:3]:
        raise DataError(
            f"The masks of a segmentation split must be integer label maps of shape "
            f"(N, H, W) = {x.shape[:3]} (one per image), got {y.dtype} {y.shape}.")
    return _Arrays(tf.constant(x), tf.constant(y.astype(np.int32)))


def _check_weights(class_weights, ignore_label):
    """class_weights as a float32 tensor (or None); ignore_label an int or None."""
    if ignore_label is not None and (isinstance(ignore_label, bool)
                                     or not isinstance(ignore_label, numbers.Integral)):
        raise DataError(f"ignore_label must be an integer label or None, got {ignore_label!r}.")
    if class_weights is None:
        return None
    values = np.asarray(class_weights, dtype=object)
    if (values.ndim != 1 or not len(values)
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                       and np.isfinite(v) and v >= 0 for v in values)):
        raise DataError(f"class_weights must be a list of one non-negative number per class, "
                        f"got {class_weights!r}.")
    return tf.constant(values.astype(np.float32))


def make_segmentation_pipeline(split, *, input_shape, batch_size, training, augment, seed,
                               repeat, normalization, stats, shard, epochs, ignore_label,
                               class_weights) -> tf.data.Dataset:
    """The (images, masks, pixel_weights) batches of a segmentation split; the arguments
    are `make_pipeline`'s (already checked there), see the module docstring."""
    from cnnbuilder.data.pipeline import shard_to_devices

    names = segmentation_augmentations(augment) if training else []
    weights = _check_weights(class_weights, ignore_label)
    size = split_size(split)
    source = _in_tensors(split)
    height, width = tuple(input_shape)[:2]
    unit = ("unit", {}) if names else (normalization, stats)

    def to_input(images, masks):
        """Stored images -> model input; masks -> int32 at the input size, -1 ignored."""
        images = preprocess(images, input_shape, normalization=unit[0], **unit[1])
        masks = tf.cast(masks, tf.int32)
        if ignore_label is not None:  # -1: ignored, until the weights are made
            masks = tf.where(masks == ignore_label, -1, masks)
        if height is not None and width is not None:
            masks = tf.image.resize(tf.cast(masks[..., None], tf.float32), (height, width),
                                    method="nearest")[..., 0]
            masks = tf.cast(masks, tf.int32)
        return images, masks

    def finish(images, masks):
        """(images, masks with -1 -> 0, pixel weights)."""
        valid = masks >= 0
        labels = tf.where(valid, masks, 0)
        pixel = tf.cast(valid, tf.float32)
        if weights is not None:
            pixel = pixel * tf.gather(weights, tf.clip_by_value(labels, 0, len(weights) - 1))
        return images, labels, pixel

    def one_pass(epoch):
        """The batches of one pass in `epoch` (a tensor, or None)."""
        order = (seed, epoch) if training else None
        batches = _stream(source, order, size, repeat, batch_size, to_input,
                          fixed=height is not None and width is not None)
        if names:
            batches = _augment(batches, names, seed, epoch)
            if normalization != "unit":
                batches = batches.map(lambda i, m: (normalize(i, normalization, **stats), m),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        batches = batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
        return shard_to_devices(batches, shard, epoch=epoch, size=size, batch_size=batch_size)

    if training and epochs is not None:
        if size is None:
            raise DataError("epochs= needs a split of known size.")
        first, end = epochs
        batches = tf.data.Dataset.range(first, end).flat_map(
            tf.autograph.experimental.do_not_convert(one_pass))
    else:
        batches = one_pass(None)
    return batches.prefetch(tf.data.AUTOTUNE)


def _stream(source, order, size, repeat, batch_size, to_input,
            fixed: bool) -> tf.data.Dataset:
    """Batches of (model-input images, int32 masks, -1 ignored) of one pass, in `order`."""
    from cnnbuilder.data.pipeline import _shuffled

    if isinstance(source, _Arrays):
        indices = _shuffled(int(source.masks.shape[0]), order)
        if repeat:
            indices = indices.repeat()
        return indices.batch(batch_size).map(
            lambda i: to_input(tf.gather(source.images, i), tf.gather(source.masks, i)),
            num_parallel_calls=tf.data.AUTOTUNE)
    if isinstance(source, _Pairs):
        files = _shuffled(int(source.images.shape[0]), order).map(
            lambda i: (tf.gather(source.images, i), tf.gather(source.masks, i)))
        split = decode_pairs(files, source.channels, source.size, source.classes)
    else:
        split = source
        if order is not None:
            from cnnbuilder.data.pipeline import shuffled_stream

            split = shuffled_stream(split, size, *order)
    if repeat:
        split = split.repeat()
    if not split.element_spec[0].shape.is_fully_defined() and not fixed:
        raise DataError(
            f"The images differ in size (shape {split.element_spec[0].shape}), so input_shape "
            "needs a fixed height and width to resize them (and their masks) to.")
    return split.map(to_input, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def _joint(op, images, masks, seed, options):
    """Apply a geometric op to images and masks with the same draws: the mask rides as an
    extra channel (label + 1, so the op's zero padding becomes -1: ignored)."""
    stacked = tf.concat([images, tf.cast(masks + 1, tf.float32)[..., None]], axis=-1)
    moved = op(stacked, seed, **options)
    return moved[..., :-1], tf.cast(tf.round(moved[..., -1]), tf.int32) - 1


def _augment(batches, names, seed, epoch) -> tf.data.Dataset:
    """Each (images, masks) batch augmented with its stateless seed, drawn as
    `cnnbuilder.data.augment.augment_batches` draws it (from (seed, epoch, position))."""
    seeds = batch_seeds(seed, epoch)
    entries = [_entry(e) for e in names]

    def augment(batch, batch_seed):
        """One batch augmented with its seed."""
        images, masks = batch
        op_seeds = tf.random.experimental.stateless_split(batch_seed, num=len(entries))
        for index, (name, options) in enumerate(entries):
            if name in JOINT_AUGMENTATIONS:
                images, masks = _joint(AUGMENTATIONS[name], images, masks, op_seeds[index],
                                       options)
            else:
                images = AUGMENTATIONS[name](images, op_seeds[index], **options)
        return images, masks

    return tf.data.Dataset.zip(batches, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
