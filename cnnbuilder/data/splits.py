"""`Dataset`, the container every loader returns, and how examples are split into it.

A split holds *stored* images: uint8 NHWC with integer labels, either in memory as
``(x, y)`` NumPy arrays or as an unbatched ``tf.data.Dataset`` of ``(uint8 image, int
label)`` when the images are decoded lazily (folders, large tfds sets).

Splits of named datasets (digits, tfds, folders) use `FIXED_SPLIT_STATE`, so their test
scores are comparable between runs and seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import tensorflow as tf

from cnnbuilder.errors import DataError

__all__ = ["FIXED_SPLIT_STATE", "Dataset", "Split", "split_size", "stratified_split", "take"]

Split = Union[tuple[np.ndarray, np.ndarray], tf.data.Dataset]

# Split seed of the named datasets: fixed on purpose, see the module docstring.
FIXED_SPLIT_STATE = 0


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: stored uint8 images split into train / validation / test.

    Each split is ``(x, y)`` NumPy arrays (x uint8 NHWC, y int64) or an unbatched
    ``tf.data.Dataset`` of ``(uint8 HWC image, int64 label)``. ``image_shape`` is the
    (H, W, C) of the stored images; H and W are None when the images differ in size.
    ``skipped`` lists the image files left out as unusable (a folder loaded with
    ``skip_bad_images=True``); it is empty otherwise.

    ``task`` is ``"classification"`` (the default: one int label per image) or
    ``"segmentation"``: each split's labels are then masks, uint8 (N, H, W) label maps in
    memory, or uint8 (H, W) per example in a tf.data split (folders are streamed as their
    images are), each pixel a class index or ``ignore_label`` (a void label such as 255,
    left out of the loss and the metrics; None: every pixel is labelled). ``palette``
    gives an (r, g, b) colour per class where the dataset has one (colour masks), for
    writing masks back as images; None otherwise. See ``docs/segmentation.md``.
    """

    name: str
    class_names: list[str]
    image_shape: tuple[int | None, int | None, int]
    train: Split
    validation: Split
    test: Split
    skipped: tuple[str, ...] = ()
    task: str = "classification"
    ignore_label: int | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (the size of the model's output)."""
        return len(self.class_names)

    @property
    def sizes(self) -> dict[str, int | None]:
        """Number of examples per split (None where a stream does not know it)."""
        return {
            "train": split_size(self.train),
            "validation": split_size(self.validation),
            "test": split_size(self.test),
        }


def split_size(split: Split) -> int | None:
    """Number of examples in a split, or None when a tf.data split cannot tell."""
    if isinstance(split, tf.data.Dataset):
        cardinality = int(split.cardinality())
        return cardinality if cardinality >= 0 else None
    return len(split[1])


def _split_off(indices: np.ndarray, labels: np.ndarray, fraction: float, random_state: int):
    """Split `indices` into (kept, held_out), stratified by label when possible."""
    from sklearn.model_selection import train_test_split

    if fraction == 0 or len(indices) == 0:
        return indices, indices[:0]
    try:
        kept, held = train_test_split(
            indices, test_size=fraction, stratify=labels, random_state=random_state
        )
    except ValueError:
        # Classes with a single example (tiny folders) cannot be stratified.
        kept, held = train_test_split(indices, test_size=fraction, random_state=random_state)
    return np.sort(kept), np.sort(held)


def stratified_split(
    labels: np.ndarray, validation_split: float, test_split: float, random_state: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, validation, test); both fractions are of all examples.

    Raises:
        DataError: the fractions cannot be met, or nothing is left for training.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    try:
        rest, test = _split_off(everything, labels, test_split, random_state)
        validation_of_rest = validation_split / (1 - test_split)
        train, validation = _split_off(rest, labels[rest], validation_of_rest, random_state)
    except ValueError as error:
        raise DataError(
            f"Cannot split {len(labels)} examples into train/validation/test with "
            f"validation_split={validation_split} and test_split={test_split}: {error}. "
            "Add more examples or lower the fractions."
        ) from None
    if len(train) == 0:
        raise DataError(
            f"Only {len(labels)} examples: nothing is left for training after holding "
            f"out validation_split={validation_split} and test_split={test_split}."
        )
    return train, validation, test


def take(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) examples at `indices`."""
    return x[indices], y[indices]
