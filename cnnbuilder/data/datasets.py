"""`load_dataset`: a dataset spec (``digits``, ``tfds:NAME``, ``folder:PATH`` or NumPy
arrays) becomes a `Dataset` of stored uint8 images split into train / validation / test.

The loaders live beside this module (`tfds`, `folders`, `arrays`); this one checks the
split fractions, dispatches on the spec and holds the embedded ``digits`` set. Turning
stored images into model input is `cnnbuilder.data.preprocess`; batching them is
`cnnbuilder.data.pipeline.make_pipeline`.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.arrays import load_arrays
from cnnbuilder.data.folders import load_folder
from cnnbuilder.data.seg_arrays import is_segmentation_arrays, load_segmentation_arrays
from cnnbuilder.data.segmentation import (
    digits_segmentation,
    is_segmentation_folder,
    load_segmentation_folder,
)
from cnnbuilder.data.splits import FIXED_SPLIT_STATE, Dataset, split_size, stratified_split, take
from cnnbuilder.data.tfds import load_tfds
from cnnbuilder.errors import DataError

__all__ = ["SPEC_FORMS", "Dataset", "load_dataset", "split_size"]

SPEC_FORMS = (
    "'digits' (scikit-learn's bundled 8x8 handwritten digits, resized to 32x32), "
    "'tfds:NAME' (a TensorFlow Datasets name such as tfds:cifar10), "
    "'digits-seg' (digits as a segmentation teaching set: background or the digit's class "
    "per pixel), "
    "'folder:PATH' (a folder with one sub-folder of images per class, or images/ and masks/ "
    "for segmentation), "
    "or, from Python, NumPy arrays (x, y) or {'train': (x, y), 'test': (x, y)}"
)


def load_dataset(
    spec: Any,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    class_names: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    raw_floats: bool = False,
    ignore_label: int | None = None,
) -> Dataset:
    """Load a dataset from a spec.

    Args:
        spec: ``"digits"``, ``"digits-seg"``, ``"tfds:NAME"``, ``"folder:PATH"`` (a folder
            with ``images/`` and ``masks/`` is a segmentation set, `cnnbuilder.data.segmentation`), a tuple ``(x, y)`` of
            NumPy arrays, or a dict ``{"train": (x, y), "test": (x, y)}`` with an
            optional ``"validation"`` entry.
        data_dir: where TensorFlow Datasets looks for prepared sets (tfds only).
        seed: random state of the split of a single ``(x, y)`` pair. The named
            datasets always use a fixed split so their test scores stay comparable.
        validation_split: fraction of all examples held out for validation (of the
            train split where the source has its own test split: tfds sets, dicts).
        test_split: fraction of all examples held out for testing, where the source
            has no test split of its own.
        class_names: names of the classes of NumPy arrays (default "0".."K-1").
        skip_bad_images: for ``folder:PATH``, leave out the image files that cannot be
            used (corrupt, truncated, not an image, too large, broken links...) and list
            them in `Dataset.skipped`, instead of raising a DataError that names them.
            Every file is checked when the folder is loaded either way, so training
            never meets a bad file mid-epoch. The other sources have no files to skip.
        raw_floats: keep float NumPy images exactly as given (any finite values: a
            caller's own Keras model takes them unchanged) instead of reading them as
            [0, 1] pixels; the other sources are images and ignore it.
        ignore_label: for NumPy segmentation arrays (masks (N, H, W) as labels), the void
            label whose pixels are ignored; the named sets know their own.

    Returns:
        The `Dataset`, its splits holding uint8 NHWC images and int64 labels, or, for a
        segmentation set (``task == "segmentation"``), masks (see `Dataset`).

    Raises:
        DataError: the spec is malformed or the data cannot be found, read or used.
    """
    _check_fractions(validation_split, test_split)
    if not isinstance(skip_bad_images, bool):
        raise DataError(f"skip_bad_images must be True or False, got {skip_bad_images!r}.")
    if isinstance(spec, str):
        if class_names is not None:
            raise DataError(
                f"class_names= is only for NumPy arrays; dataset {spec!r} names its own "
                "classes."
            )
        if ignore_label is not None:
            raise DataError(f"ignore_label= is only for NumPy segmentation arrays; dataset "
                            f"{spec!r} knows its own void label.")
        return _load_named(spec, data_dir, validation_split, test_split, skip_bad_images)
    if isinstance(spec, (tuple, list, Mapping)) and is_segmentation_arrays(spec):
        return load_segmentation_arrays(spec, class_names, seed, validation_split,
                                        test_split, ignore_label)
    if ignore_label is not None:
        raise DataError("ignore_label= is for segmentation arrays, whose labels are (N, H, W) "
                        "masks; these labels are one class per image.")
    if isinstance(spec, (tuple, list, Mapping)):
        return load_arrays(spec, class_names, seed, validation_split, test_split,
                           raw_floats=raw_floats)
    raise DataError(
        f"Unknown dataset spec {spec!r} (a {type(spec).__name__}). Expected {SPEC_FORMS}."
    )


def _load_named(
    spec: str, data_dir, validation_split: float, test_split: float, skip_bad_images: bool
) -> Dataset:
    """Dispatch a string spec to its loader."""
    kind, sep, rest = spec.partition(":")
    if spec == "digits":
        return _load_digits(validation_split, test_split)
    if spec == "digits-seg":
        return digits_segmentation(_load_digits(validation_split, test_split))
    if sep and kind == "tfds":
        return load_tfds(rest.strip(), data_dir, validation_split, test_split)
    if sep and kind == "folder":
        root = Path(rest.strip()).expanduser().resolve()
        if rest.strip() and is_segmentation_folder(root):
            return load_segmentation_folder(root, validation_split, test_split, skip_bad_images)
        return load_folder(rest.strip(), validation_split, test_split, skip_bad_images)
    raise DataError(f"Unknown dataset spec {spec!r}. Expected {SPEC_FORMS}.")


def _check_fractions(validation_split: float, test_split: float) -> None:
    """Reject split fractions that leave nothing (or less than nothing) to train on."""
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise DataError(f"{name} must be a fraction in [0, 1), got {value!r}.")
    if validation_split + test_split >= 1:
        raise DataError(
            f"validation_split + test_split must be below 1 so that examples are left "
            f"for training, got {validation_split} + {test_split}."
        )


def _load_digits(validation_split: float, test_split: float) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits as 32x32x1 uint8, with a fixed split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch to the 0..255 range of ordinary images.
    images = digits.images.astype(np.float32)[..., np.newaxis] * (255.0 / 16.0)
    resized = tf.image.resize(images, (32, 32), method="bilinear").numpy()
    x = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    y = digits.target.astype(np.int64)
    train, validation, test = stratified_split(y, validation_split, test_split, FIXED_SPLIT_STATE)
    return Dataset(
        name="digits",
        class_names=[str(i) for i in range(10)],
        image_shape=(32, 32, 1),
        train=take(x, y, train),
        validation=take(x, y, validation),
        test=take(x, y, test),
    )
