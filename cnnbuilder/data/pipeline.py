"""`make_pipeline`: one split of stored images into batches a model can eat.

Every image goes through `cnnbuilder.data.preprocess`, the conversion an exported model
applies too; training batches are shuffled and augmented on the way.

A training run's batches (``epochs=(first, end)``) are a function of (seed, epoch,
position): epoch e's order is a permutation drawn from (seed, e) alone and the
augmentation of its b-th batch from (seed, e, b) alone, with TensorFlow's stateless random
ops. A run resumed at epoch k therefore sees exactly the batches the uninterrupted run saw
from epoch k on, whatever ran before in the process.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.arrays import check_images
from cnnbuilder.data.augment import augment_batches, augmentation_names, epoch_seed
from cnnbuilder.data.folders import decode_files, file_source
from cnnbuilder.data.preprocess import (
    check_input_shape,
    check_normalization,
    normalize,
    preprocess,
)
from cnnbuilder.data.splits import Split, split_size
from cnnbuilder.errors import DataError

__all__ = ["batch_count", "make_pipeline", "shard_to_devices", "shuffled_stream"]

# Shuffle buffer for streamed splits whose elements may be large decoded images.
_STREAM_SHUFFLE_BUFFER = 10_000


def make_pipeline(
    split: Split,
    *,
    input_shape: Sequence[int | None],
    batch_size: int,
    training: bool,
    augment: str | Sequence[str] | None = None,
    seed: int = 0,
    repeat: bool = False,
    normalization: str = "unit",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    shard: tuple[int, int, int] | None = None,
    epochs: tuple[int, int] | None = None,
    ignore_label: int | None = None,
    class_weights: Sequence[float] | None = None,
    crop_from: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 model input shaped like `input_shape`, int labels); of a
    segmentation split (masks as labels), (images, int32 (B, H, W) masks, float32 (B, H, W)
    pixel weights), see `cnnbuilder.data.seg_pipeline`.

    Args:
        split: ``(x, y)`` arrays or a tf.data split of a `Dataset`.
        input_shape: the model's (H, W, C); see `preprocess`.
        batch_size: examples per batch (the last one may be smaller).
        training: shuffle (the whole split in memory; file names for folders; a
            10,000-example buffer for other streams) and apply `augment` per batch,
            deterministically given `seed` and differently each epoch. Without it the
            order is the split's and nothing random happens.
        augment: None, a name or a list of names of `AUGMENTATIONS` (training only).
        seed: seed of the shuffle and of the augmentations.
        repeat: repeat forever (pass ``steps_per_epoch`` to ``fit``).
        normalization: the `preprocess` normalization mode (``unit``: [0, 1]).
        mean, std: the ``dataset`` mode's per-channel statistics (on the [0, 1] scale,
            `cnnbuilder.data.statistics.channel_statistics` of the training split).
        shard: (process index, processes, devices per process) of a run whose batches
            are split over several devices (`cnnbuilder.training.distribution.data_shard`):
            of every batch, this process keeps its devices' rows, an equal number per
            device, in the batch's order (`shard_batches`).
        epochs: (first, end) with `training`: the batches of epochs first..end-1 one after
            the other, each epoch's order and augmentation drawn from (seed, epoch,
            position) (see the module docstring; pass ``steps_per_epoch=batch_count(...)``
            to ``fit``). Needs a split of known size. Without it, each pass over the
            pipeline is shuffled anew from a seeded stream.
        ignore_label: segmentation only: the mask value left out (weight 0; the dataset's
            `Dataset.ignore_label`, e.g. 255), or None.
        class_weights: segmentation only: a weight per class, the pixel weight of each
            labelled pixel (None: 1).
        crop_from: `preprocess`'s resize of the shorter side before the centre crop (the
            evaluation transform of PyTorch-world weights); None resizes straight.

    Returns:
        A prefetching ``tf.data.Dataset``.

    Raises:
        DataError: a bad argument or split.
    """
    stats = dict(mean=mean, std=std)
    check_normalization(normalization, check_input_shape(input_shape)[2], **stats)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    from cnnbuilder.data.seg_pipeline import is_segmentation_split, make_segmentation_pipeline

    if is_segmentation_split(split):
        if crop_from is not None:
            raise DataError("crop_from (a centre crop) is for classification: a segmentation "
                            "mask must cover the whole image.")
        return make_segmentation_pipeline(
            split, input_shape=input_shape, batch_size=batch_size, training=training,
            augment=augment, seed=seed, repeat=repeat, normalization=normalization,
            stats=stats, shard=shard, epochs=epochs, ignore_label=ignore_label,
            class_weights=class_weights)
    if ignore_label is not None or class_weights is not None:
        raise DataError("ignore_label and class_weights are for segmentation splits (masks "
                        "as labels); this split has one label per image.")
    names = augmentation_names(augment) if training else []
    options = dict(input_shape=input_shape, batch_size=batch_size, training=training,
                   names=names, seed=seed, repeat=repeat, normalization=normalization,
                   stats=stats, shard=shard, size=split_size(split), crop_from=crop_from)
    # Arrays and file lists become tensors once, here: each epoch's dataset captures them
    # rather than copying them into its graph.
    split = _in_tensors(split) if training or not isinstance(split, tf.data.Dataset) else split
    if training and epochs is not None:
        if options["size"] is None:
            raise DataError("epochs= needs a split of known size.")
        first, end = epochs
        batches = tf.data.Dataset.range(first, end).flat_map(
            tf.autograph.experimental.do_not_convert(
                lambda epoch: _batches(split, epoch=epoch, **options)))
    else:
        batches = _batches(split, epoch=None, **options)
    return batches.prefetch(tf.data.AUTOTUNE)


def _batches(split, *, input_shape, batch_size, training, names, seed, repeat, normalization,
             stats, shard, size, epoch, crop_from=None) -> tf.data.Dataset:
    """The batches of one pass over `split` of `size` examples (None: unknown) in epoch
    `epoch` (a tensor; None: seeded anew each pass); see `make_pipeline`."""
    # Augmentations work in [0, 1] (their padding is black); normalization follows them.
    convert = _convert_batch(input_shape, *(("unit", {}) if names else (normalization, stats)),
                             crop_from=crop_from)
    order = (seed, epoch) if training else None
    if isinstance(split, _Arrays):
        batches = _array_batches(split, batch_size, order, repeat, convert)
    else:
        batches = _stream_batches(split, input_shape, batch_size, order, repeat, convert, size)
    if names:
        batches = augment_batches(batches, names, seed, epoch)
        if normalization != "unit":
            batches = batches.map(
                lambda images, labels: (normalize(images, normalization, **stats), labels),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    return shard_to_devices(batches, shard, epoch=epoch, size=size, batch_size=batch_size)


def shard_to_devices(batches: tf.data.Dataset, shard, *, epoch, size, batch_size) -> tf.data.Dataset:
    """`batches` as this process's share (`shard_batches`) when `shard` is given, with
    the epoch's length stated where it is known; `batches` unchanged without a shard."""
    if shard is None:
        return batches
    known = epoch is not None or batches.cardinality() >= 0
    batches = shard_batches(batches, *shard)
    if known and size is not None:
        # The filter hides the length: state it (a single device's, less a dropped
        # last batch), so Keras knows how many steps an epoch has.
        steps = batch_count(size, batch_size, devices=shard[1] * shard[2])
        batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
    return batches


def _shuffled(count: int, order) -> tf.data.Dataset:
    """Indices 0..count-1 in the training order `order` = (seed, epoch): a permutation
    drawn from both (epoch None: reshuffled from the seed every pass); None: in order."""
    if order is None:
        return tf.data.Dataset.range(count)
    seed, epoch = order
    if epoch is None:
        return tf.data.Dataset.range(count).shuffle(max(count, 1), seed=seed,
                                                    reshuffle_each_iteration=True)
    keys = tf.random.stateless_uniform([count], seed=epoch_seed(seed, epoch, 0))
    return tf.data.Dataset.from_tensor_slices(tf.argsort(keys))


def batch_count(size: int, batch_size: int, devices: int = 1) -> int:
    """Batches of a split of `size` examples: the full ones, and a short last one when it
    holds at least one row per device (`shard_batches` drops it otherwise)."""
    full, rest = divmod(size, batch_size)
    return full + (rest >= devices if rest else 0)


def shard_batches(batches: tf.data.Dataset, index: int, processes: int,
                  devices_per_process: int) -> tf.data.Dataset:
    """This process's rows of every (images, labels) batch of a data-parallel run.

    A batch of b rows over D = processes × devices_per_process devices gives each device
    b // D rows, in order: process `index` keeps rows [index·s, (index+1)·s) with
    s = (b // D) · devices_per_process, the slice a single process would feed those
    devices. The last b mod D rows of a short last batch are left out (fewer than D
    examples per split), and a batch with fewer rows than devices is dropped, the same on
    every process. Every process reads the whole global batch: the augmentation of a batch
    is drawn for all of its rows at once, so each process must see all of them to apply
    exactly what one process would.
    """
    devices = processes * devices_per_process

    def rows(*batch):  # (images, labels), or a segmentation's (images, masks, weights)
        per_process = (tf.shape(batch[0])[0] // devices) * devices_per_process
        start = index * per_process
        return tuple(part[start:start + per_process] for part in batch)

    return batches.map(rows, num_parallel_calls=tf.data.AUTOTUNE).filter(
        lambda *batch: tf.shape(batch[0])[0] > 0)


def _convert_batch(input_shape, normalization: str, stats: dict, crop_from=None):
    """A map function converting a uint8 (images, labels) batch to model input."""
    def convert(images, labels):
        return preprocess(images, input_shape, normalization=normalization, crop_from=crop_from,
                          **stats), labels

    return convert


class _Arrays(NamedTuple):
    """An in-memory split as tensors: images (uint8, or float32 fed as they are), labels."""

    images: tf.Tensor
    labels: tf.Tensor
    raw: bool


class _Files(NamedTuple):
    """A split of image files (`folders.file_source`) as tensors of names and labels."""

    names: tf.Tensor
    labels: tf.Tensor
    channels: int
    size: tuple


def _in_tensors(split):
    """`split` as `_Arrays` ((x, y) arrays, checked), `_Files` (a folder split) or the
    tf.data split itself (any other stream)."""
    if isinstance(split, tf.data.Dataset):
        source = file_source(split)
        if source is None:
            return split
        paths, labels, channels, size = source
        return _Files(tf.constant(paths.astype(str)), tf.constant(labels), channels, size)
    try:
        x, y = split
    except (TypeError, ValueError):
        raise DataError(
            f"A split must be (x, y) NumPy arrays or a tf.data.Dataset, got "
            f"{type(split).__name__}."
        ) from None
    x = np.asarray(x)
    raw = bool(np.issubdtype(x.dtype, np.floating))  # a caller's own features, as they are
    if not raw and len(x):
        x = check_images(x, "the split")
    return _Arrays(tf.constant(x, tf.float32 if raw else None), tf.constant(np.asarray(y)), raw)


def _array_batches(arrays: _Arrays, batch_size, order, repeat, convert) -> tf.data.Dataset:
    """Batches from in-memory arrays: shuffle indices, gather whole batches, convert."""
    images, labels = arrays.images, arrays.labels
    # Shuffling indices and gathering a batch at once is far cheaper than a shuffle
    # buffer that copies every image one by one.
    indices = _shuffled(int(labels.shape[0]), order)
    if repeat:
        indices = indices.repeat()
    batches = indices.batch(batch_size).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return batches if arrays.raw else batches.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def shuffled_stream(split: tf.data.Dataset, known: int | None, seed: int, epoch) -> tf.data.Dataset:
    """A stream of `known` examples (None: unknown) through a shuffle buffer: in epoch
    `epoch` (a tensor inside the epochs' `flat_map`) its order is drawn from (seed, epoch)
    alone; with `epoch` None, reshuffled from `seed` on every pass."""
    buffer = max(min(known, _STREAM_SHUFFLE_BUFFER) if known else _STREAM_SHUFFLE_BUFFER, 1)
    if epoch is None:
        return split.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    drawn = tf.random.stateless_uniform([], seed=epoch_seed(seed, epoch, 0), minval=None,
                                        maxval=None, dtype=tf.int64)
    # TensorFlow pairs an op seed with the graph's seed and, when that is 0 (after
    # `tf.random.set_seed(0)`, which a run with seed 0 makes), compares the op seed with 0
    # in Python: a tensor seed then raises. The graph seed is set aside while the shuffle
    # is made, so its order depends on (seed, epoch) alone, whatever the global seed.
    graph = tf.compat.v1.get_default_graph()
    global_seed, graph.seed = graph.seed, None
    try:
        return split.shuffle(buffer, reshuffle_each_iteration=False, seed=drawn)
    finally:
        graph.seed = global_seed


def _stream_batches(split, input_shape, batch_size, order, repeat, convert,
                    known: int | None) -> tf.data.Dataset:
    """Batches from a tf.data split of unbatched (uint8 image, label), or of `_Files`."""
    if isinstance(split, _Files):
        # Shuffle file names, then decode: no buffer of decoded images.
        names, classes = split.names, split.labels
        files = _shuffled(int(names.shape[0]), order).map(
            lambda i: (tf.gather(names, i), tf.gather(classes, i)))
        split = decode_files(files, split.channels, split.size)
    elif order is not None:
        split = shuffled_stream(split, known, *order)
    if repeat:
        split = split.repeat()
    image_spec = split.element_spec[0]
    if image_spec.shape.is_fully_defined():
        return split.batch(batch_size).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    # Images of different sizes must reach a common size before they can be batched.
    if None in tuple(input_shape)[:2]:
        raise DataError(
            f"The images differ in size (shape {image_spec.shape}), so input_shape "
            f"{tuple(input_shape)} needs a fixed height and width to resize them to."
        )
    return split.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
