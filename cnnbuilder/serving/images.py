"""Reading image files for `predict` (the one decoder of `cnnbuilder.data.images`, EXIF
orientation applied, which the training pipeline decodes with too) and running a model
over images of several sizes, those of one size batched together."""

from __future__ import annotations

import numpy as np

from cnnbuilder.data.images import read_image

__all__ = ["read_image", "run_by_shape"]


def run_by_shape(run, images: list, batch_size: int) -> list[np.ndarray]:
    """`run`'s output for each of `images`, in their order: `run` takes a uint8 batch of
    images of one shape, so images of equal shape go together, at most `batch_size` a call."""
    import tensorflow as tf

    groups: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    outputs: dict[int, np.ndarray] = {}
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            for i, row in zip(chunk, np.asarray(run(tf.constant(np.stack([images[i] for i in chunk]))))):
                outputs[i] = row
    return [outputs[i] for i in range(len(images))]
