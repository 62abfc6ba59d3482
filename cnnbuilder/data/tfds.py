"""TensorFlow Datasets image-classification sets (``tfds:NAME``); the sets with a
segmentation mask (``oxford_iiit_pet``) are `cnnbuilder.data.tfds_seg`'s.

A set must be prepared on disk: nothing is downloaded at run time. It is read into
memory as NumPy arrays when it is small enough (cifar10: 60k images, 184 MB), otherwise
streamed as tf.data.
Missing validation/test splits are carved from train with a fixed split.
"""

from __future__ import annotations

import difflib
import math
import os
from typing import Any

import numpy as np

from cnnbuilder.data.tfds_seg import is_segmentation_set, load_tfds_segmentation
from cnnbuilder.data.splits import FIXED_SPLIT_STATE, Dataset, Split, stratified_split, take
from cnnbuilder.errors import DataError

__all__ = ["load_tfds"]

# A tfds set is read into memory below these sizes (cifar10: 60k images, 184 MB).
_IN_MEMORY_MAX_EXAMPLES = 200_000
_IN_MEMORY_MAX_BYTES = 2 * 1024**3


def load_tfds(name: str, data_dir, validation_split: float, test_split: float) -> Dataset:
    """A TensorFlow Datasets image-classification set, prepared on disk (never downloaded).

    Raises:
        DataError: unknown name, not prepared on disk, or not an (image, label) set.
    """
    import tensorflow_datasets as tfds

    if not name:
        raise DataError("Dataset spec 'tfds:' names no dataset; write e.g. tfds:cifar10.")
    builder = _tfds_builder(tfds, name, data_dir)
    _ensure_prepared(builder, name)
    info = builder.info
    if is_segmentation_set(info):  # e.g. oxford_iiit_pet: `cnnbuilder.data.tfds_seg`
        return load_tfds_segmentation(builder, name, validation_split, test_split)
    image_key, label_key = _supervised_keys(info, name)
    names = list(info.features[label_key].names)
    image_shape = tuple(info.features[image_key].shape)
    plan = _tfds_split_plan(info)
    total = sum(info.splits[s].num_examples for s in info.splits.keys() if s in plan["read"])
    in_memory = all(d is not None for d in image_shape) and (
        total < _IN_MEMORY_MAX_EXAMPLES
        and total * math.prod(image_shape) < _IN_MEMORY_MAX_BYTES
    )
    if in_memory:
        splits = _tfds_in_memory_splits(tfds, builder, plan, validation_split, test_split)
    else:
        splits = _tfds_streamed_splits(builder, info, plan, validation_split, test_split)
    return Dataset(
        name=f"tfds:{name}", class_names=names, image_shape=image_shape, **splits
    )


def _tfds_builder(tfds, name: str, data_dir):
    """`tfds.builder(name)`, turning an unknown name into a DataError with suggestions."""
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as error:  # noqa: BLE001 - tfds raises several unrelated types here
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(
            base, tfds.list_builders(with_community_datasets=False), n=5, cutoff=0.6
        )
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise DataError(
            f"TensorFlow Datasets has no dataset {name!r} (tfds:{name}): "
            f"{_first_line(error)}.{hint} See `tfds.list_builders()` for the names."
        ) from None


def _ensure_prepared(builder, name: str) -> None:
    """Refuse a set that is not prepared on disk: cnnbuilder never downloads at run time
    (a download may be large, slow, or need a licence accepted by hand); say where to put
    the prepared data."""
    if builder.is_prepared():
        return
    raise DataError(
        f"Dataset tfds:{name} is not prepared on disk, and cnnbuilder does not download "
        f"datasets. TensorFlow Datasets looks for it in {builder.data_dir} (data dir "
        f"{builder.data_dir_root}). Prepare it where there is internet with `tfds build "
        f"{name} --data_dir DIR`, copy DIR here and pass --data-dir DIR (data_dir=DIR from "
        "Python, or set TFDS_DATA_DIR)."
    )


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, without a trailing full stop."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def _supervised_keys(info, name: str) -> tuple[str, str]:
    """The (image, label) feature names of a tfds image-classification set."""
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise DataError(
            f"tfds:{name} is not an (image, label) classification dataset "
            f"(supervised keys: {keys!r})."
        )
    image_key, label_key = keys
    image, label = info.features[image_key], info.features[label_key]
    image_shape = tuple(getattr(image, "shape", ()))
    if len(image_shape) != 3 or getattr(image, "np_dtype", None) != np.uint8:
        raise DataError(
            f"tfds:{name} feature {image_key!r} is not a uint8 (H, W, C) image "
            f"(shape {image_shape})."
        )
    if not getattr(label, "names", None):
        raise DataError(f"tfds:{name} feature {label_key!r} is not a class label.")
    return image_key, label_key


def _tfds_split_plan(info) -> dict[str, Any]:
    """Which tfds splits provide train, validation and test (None: carve from train)."""
    available = set(info.splits.keys())
    if "train" not in available:
        raise DataError(
            f"tfds:{info.name} has no 'train' split (splits: {sorted(available)})."
        )
    test = "test" if "test" in available else None
    validation = "validation" if "validation" in available else None
    read = {"train", *(s for s in (test, validation) if s)}
    return {"test": test, "validation": validation, "read": read}


def _tfds_numpy(tfds, builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One tfds split read into memory as (uint8 images, int64 labels)."""
    ds = builder.as_dataset(split=split, as_supervised=True).batch(4096)
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(f"Split {split!r} of tfds:{builder.info.full_name} is empty.")
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int64)


def _tfds_in_memory_splits(
    tfds, builder, plan, validation_split: float, test_split: float
) -> dict[str, Split]:
    """NumPy splits; missing validation/test are carved from train with a fixed split."""
    x, y = _tfds_numpy(tfds, builder, "train")
    held_validation = 0.0 if plan["validation"] else validation_split
    held_test = 0.0 if plan["test"] else test_split
    train, validation, test = stratified_split(
        y, held_validation, held_test, FIXED_SPLIT_STATE
    )
    return {
        "train": take(x, y, train),
        "validation": (
            _tfds_numpy(tfds, builder, plan["validation"])
            if plan["validation"]
            else take(x, y, validation)
        ),
        "test": _tfds_numpy(tfds, builder, plan["test"]) if plan["test"] else take(x, y, test),
    }


def split_slices(info, plan, validation_split: float, test_split: float) -> dict[str, str]:
    """tfds split names of train, validation and test: the set's own where `plan` has
    them, else fixed slices of the end of its train split (the same for every run)."""
    n = info.splits["train"].num_examples
    n_test = 0 if plan["test"] else math.ceil(n * test_split)
    n_validation = 0 if plan["validation"] else math.ceil(n * validation_split)
    n_train = n - n_test - n_validation
    return {
        "train": f"train[:{n_train}]",
        "validation": plan["validation"] or f"train[{n_train}:{n_train + n_validation}]",
        "test": plan["test"] or f"train[{n_train + n_validation}:]",
    }


def _tfds_streamed_splits(
    builder, info, plan, validation_split: float, test_split: float
) -> dict[str, Split]:
    """tf.data splits; missing validation/test are fixed slices of the end of train."""
    names = split_slices(info, plan, validation_split, test_split)
    return {
        key: builder.as_dataset(split=split, as_supervised=True)
        for key, split in names.items()
    }


