"""Caller-supplied NumPy arrays: a single ``(x, y)`` pair or a dict of splits, checked.

Images become uint8 NHWC (from uint8 or integer 0..255, or float 0..1 arrays, NHW or
NHWC); labels int64 class ids. Every check names the split and what was expected.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cnnbuilder.data.labels import check_class_names, check_labels
from cnnbuilder.data.splits import Dataset, stratified_split, take
from cnnbuilder.errors import DataError

__all__ = ["check_images", "load_arrays"]


def load_arrays(
    spec, class_names, seed: int, validation_split: float, test_split: float, *,
    raw_floats: bool = False,
) -> Dataset:
    """Caller-supplied NumPy arrays: a single (x, y) pair (split here) or a dict of splits.
    With `raw_floats`, float images stay as given (only checked finite)."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"train", "validation", "test"}
        missing = {"train", "test"} - set(spec)
        if unknown or missing:
            raise DataError(
                f"A dict dataset needs the keys 'train' and 'test' (and optionally "
                f"'validation'), each an (x, y) pair; got keys {sorted(map(str, spec))}."
            )
        splits = {key: _check_pair(value, key, raw_floats) for key, value in spec.items()}
        if "validation" not in splits:
            x, y = splits["train"]
            train, validation, _ = stratified_split(y, validation_split, 0.0, seed)
            splits["train"], splits["validation"] = take(x, y, train), take(x, y, validation)
    else:
        x, y = _check_pair(spec, "arrays", raw_floats)
        # Before splitting: a stray label would otherwise first trouble the stratified split.
        if class_names is None:
            check_labels({"arrays": y}, int(y.max()) + 1, "arrays", inferred=True)
        train, validation, test = stratified_split(y, validation_split, test_split, seed)
        splits = {
            "train": take(x, y, train),
            "validation": take(x, y, validation),
            "test": take(x, y, test),
        }
    shapes = {key: pair[0].shape[1:] for key, pair in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"The splits hold images of different shapes {shapes}; all splits need the "
            "same (H, W, C)."
        )
    num_labels = 1 + max((int(pair[1].max()) for pair in splits.values() if len(pair[1])))
    names = _array_class_names(class_names, num_labels)
    check_labels({key: pair[1] for key, pair in splits.items()}, len(names),
                 "class_names" if class_names is not None else "arrays",
                 inferred=class_names is None)
    return Dataset(
        name="arrays",
        class_names=names,
        image_shape=tuple(int(d) for d in shapes["train"]),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
    )


def _check_pair(pair, where: str, raw_floats: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (x, y) pair; return (uint8 NHWC images, int64 labels)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        length = f" of length {len(pair)}" if hasattr(pair, "__len__") else ""
        raise DataError(
            f"Dataset {where} must be a pair (x, y) of NumPy arrays, got "
            f"{type(pair).__name__}{length}."
        )
    x, y = np.asarray(pair[0]), np.asarray(pair[1])
    return check_images(x, where, raw_floats=raw_floats), _check_labels(y, len(x), where)


def check_images(x: np.ndarray, where: str, *, raw_floats: bool = False) -> np.ndarray:
    """uint8 NHWC images from uint8/integer 0..255 or float 0..1 arrays, NHW or NHWC;
    with `raw_floats`, float arrays of any finite values as float32, unchanged."""
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 2, 3, 4) or 0 in x.shape:
        raise DataError(
            f"Images x of {where} have shape {x.shape}; expected a non-empty (N, H, W) or "
            "(N, H, W, C) array with C in 1..4."
        )
    if x.dtype == np.uint8:
        return x
    if raw_floats and np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"Images x of {where} hold NaN or infinite values.")
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1:
        return np.round(x * 255).astype(np.uint8)
    numeric = np.issubdtype(x.dtype, np.number)
    found = f" with values in [{x.min()}, {x.max()}]" if numeric else ""
    raise DataError(
        f"Images x of {where} have dtype {x.dtype}{found}; expected uint8 (0..255) or "
        "floats in [0, 1] (no NaN)."
    )


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """int64 class ids of shape (n,) from (n,) or (n, 1) integer arrays."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? pass y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(
            f"Labels y of {where} have shape {y.shape}; expected integer class ids of "
            f"shape ({n},){hint}."
        )
    if len(y) != n:
        raise DataError(f"{where} has {n} images but {len(y)} labels; they must match.")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(
                f"Labels y of {where} have dtype {y.dtype}; expected integer class ids."
            )
    if len(y) and y.min() < 0:
        raise DataError(f"Labels y of {where} include {y.min()}; class ids start at 0.")
    return y.astype(np.int64)


def _array_class_names(class_names, num_labels: int) -> list[str]:
    """The caller's class names, checked against the labels, or "0".."K-1"."""
    if class_names is None:
        return [str(i) for i in range(num_labels)]
    names = check_class_names(class_names, "class_names")
    if len(names) < num_labels:
        raise DataError(
            f"class_names has {len(names)} names but the labels go up to "
            f"{num_labels - 1}; give one name per class."
        )
    if len(set(names)) != len(names):
        raise DataError(f"class_names repeats a name: {names}.")
    return names


