"""`channel_statistics`: the training split's per-channel mean and standard deviation.

They are the ``dataset`` normalization of `cnnbuilder.data.preprocess` (``(x - mean) /
std``), the input normalization of the papers of networks without pretrained weights
(Huang et al. 2017: "normalize the data using the channel means and standard
deviations"). They are taken on what the model would see before normalizing: the
stored images scaled to [0, 1], with their channels adapted and resized to the model's
input (`preprocess` in ``unit`` mode), never augmented. In-memory arrays are read in
chunks, streamed splits in one pass; the sums are float64, so the result does not
depend on the chunking beyond rounding.

A split's statistics are computed once per input shape and remembered while the split
lives, so the trials of a search over one dataset do not each read it again.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.preprocess import DATASET, check_input_shape, check_preprocessing_config, preprocess
from cnnbuilder.data.splits import Split
from cnnbuilder.errors import DataError

__all__ = ["channel_statistics", "recorded_statistics"]

# Images converted at once: bounds the float32 copy of a large in-memory split.
_CHUNK = 512
# A channel that never varies (a constant border colour, a blank dataset) has std 0;
# it is left unscaled (std 1) rather than divided by zero.
_CONSTANT_STD = 1.0
# id(split's images) -> {input_shape: (mean, std)}, dropped when the images are freed.
_CACHE: dict[int, dict] = {}


def channel_statistics(split: Split, input_shape: Sequence[int | None]) -> tuple[tuple, tuple]:
    """(mean, std) per channel of `split`'s images as `preprocess` makes them for a
    model of `input_shape` in ``unit`` mode (so on the [0, 1] scale).

    Args:
        split: ``(x, y)`` arrays or an unbatched tf.data split of (uint8 image, label).
        input_shape: the model's (H, W, C).

    Returns:
        Two tuples of C Python floats; std is the population standard deviation.

    Raises:
        DataError: an empty split or one that `preprocess` cannot convert.
    """
    shape = tuple(check_input_shape(input_shape))
    key = split[0] if isinstance(split, tuple) else split
    cached = _CACHE.get(id(key), {})
    if shape not in cached:
        cached[shape] = _compute(split, shape)
        if id(key) not in _CACHE:
            try:  # remembered only while the images live (ids are reused afterwards)
                weakref.finalize(key, _CACHE.pop, id(key), None)
                _CACHE[id(key)] = cached
            except TypeError:  # not weakly referenceable (a list): not remembered
                pass
    return cached[shape]


def _compute(split: Split, input_shape: tuple) -> tuple[tuple, tuple]:
    """One pass over `split`: float64 sums of the pixels and of their squares."""
    channels = input_shape[2]
    total = np.zeros(channels, np.float64)
    squares = np.zeros(channels, np.float64)
    count = 0
    for batch in _batches(split, input_shape):
        pixels = batch.reshape(-1, channels).astype(np.float64)
        total += pixels.sum(axis=0)
        squares += np.square(pixels).sum(axis=0)
        count += len(pixels)
    if count == 0:
        raise DataError("the training split is empty: the dataset statistics of the "
                        "'dataset' normalization need its images.")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    std = np.where(std > 1e-7, std, _CONSTANT_STD)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _batches(split: Split, input_shape: tuple):
    """NumPy float32 batches of `split`'s images in ``unit`` mode."""
    if isinstance(split, tf.data.Dataset):
        images = split.map(lambda image, label: image)
        if not images.element_spec.shape.is_fully_defined():
            # Images of different sizes: convert one by one, then batch (one at a time
            # where the model keeps the stored size, so the sizes still differ).
            images = images.map(lambda image: preprocess(image, input_shape),
                                num_parallel_calls=tf.data.AUTOTUNE)
            images = images.batch(1 if None in input_shape[:2] else _CHUNK)
        else:
            images = images.batch(_CHUNK).map(lambda batch: preprocess(batch, input_shape),
                                              num_parallel_calls=tf.data.AUTOTUNE)
        for batch in images.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            yield batch
        return
    x = np.asarray(split[0])
    for start in range(0, len(x), _CHUNK):
        yield preprocess(x[start:start + _CHUNK], input_shape).numpy()


def recorded_statistics(record) -> tuple[tuple, tuple]:
    """(mean, std) of a run's ``dataset`` preprocessing record (run.json's
    ``"preprocessing"``), checked field by field; a DataError when it is not one."""
    config = check_preprocessing_config(record)
    if config.get("normalization") != DATASET:
        raise DataError(f"the preprocessing record normalizes with "
                        f"{config.get('normalization')!r}, not the dataset statistics.")
    return tuple(config["mean"]), tuple(config["std"])
