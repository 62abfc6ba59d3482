"""Caller-supplied segmentation arrays: ``(x, masks)`` or ``{"train": (x, masks), ...}``
with masks integer (N, H, W) label maps, one per image, checked.

`load_dataset` sends NumPy arrays here when their labels are 3-D. Labels must lie in
0..K-1 (K = the number of `class_names`, or the largest label + 1) or equal the
`ignore_label`; a single pair is split at random with `seed` (not stratified: a mask has
no single class).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cnnbuilder.data.arrays import check_images
from cnnbuilder.data.labels import check_class_names
from cnnbuilder.data.splits import Dataset, stratified_split, take
from cnnbuilder.errors import DataError

__all__ = ["is_segmentation_arrays", "load_segmentation_arrays"]


def is_segmentation_arrays(spec) -> bool:
    """Whether an arrays spec's labels are masks ((N, H, W) rather than (N,))."""
    pair = spec.get("train") if isinstance(spec, Mapping) else spec
    try:
        _, y = pair
    except (TypeError, ValueError):
        return False
    return np.ndim(y) == 3


def load_segmentation_arrays(spec, class_names, seed: int, validation_split: float,
                             test_split: float, ignore_label: int | None) -> Dataset:
    """A segmentation `Dataset` of NumPy arrays (module docstring).

    Raises:
        DataError: bad keys, images, masks of another shape or dtype, labels out of range.
    """
    if ignore_label is not None and (isinstance(ignore_label, bool)
                                     or not isinstance(ignore_label, (int, np.integer))):
        raise DataError(f"ignore_label must be an integer label or None, got {ignore_label!r}.")
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"train", "validation", "test"}
        if unknown or {"train", "test"} - set(spec):
            raise DataError(
                "A dict dataset needs the keys 'train' and 'test' (and optionally 'validation'), "
                f"each an (x, masks) pair; got keys {sorted(map(str, spec))}.")
        splits = {key: _check_pair(value, key) for key, value in spec.items()}
        if "validation" not in splits:
            x, m = splits["train"]
            train, validation, _ = stratified_split(np.zeros(len(m)), validation_split, 0.0, seed)
            splits["train"], splits["validation"] = take(x, m, train), take(x, m, validation)
    else:
        x, m = _check_pair(spec, "arrays")
        indices = stratified_split(np.zeros(len(m)), validation_split, test_split, seed)
        splits = dict(zip(("train", "validation", "test"), (take(x, m, i) for i in indices)))
    shapes = {key: pair[0].shape[1:] for key, pair in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"The splits hold images of different shapes {shapes}; all splits "
                        "need the same (H, W, C).")
    labelled = [pair[1][pair[1] != ignore_label] for pair in splits.values()]
    top = max((int(v.max()) for v in labelled if v.size), default=0)
    if class_names is None:
        names = [str(i) for i in range(max(top + 1, 2))]
    else:
        names = check_class_names(class_names, "class_names")
    for key, (_, masks) in splits.items():
        wrong = (masks >= len(names)) & (masks != ignore_label)
        if wrong.any():
            raise DataError(
                f"Masks of {key} hold label {int(masks[wrong].max())}, out of range: the "
                f"{len(names)} classes are labels 0-{len(names) - 1}"
                + (f", and {ignore_label} is ignored." if ignore_label is not None else
                   " (pass ignore_label= for a void label such as 255)."))
    return Dataset(name="arrays", class_names=names,
                   image_shape=tuple(int(d) for d in shapes["train"]),
                   task="segmentation", ignore_label=ignore_label, **splits)


def _check_pair(pair, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int32 (N, H, W) masks) of one (x, masks) pair."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise DataError(f"Dataset {where} must be a pair (x, masks) of NumPy arrays, got "
                        f"{type(pair).__name__}.")
    x = check_images(np.asarray(pair[0]), where)
    masks = np.asarray(pair[1])
    if (not np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool
            or masks.shape != x.shape[:3]):
        raise DataError(f"Masks of {where} have {masks.dtype} shape {masks.shape}; expected "
                        f"integer label maps of shape {x.shape[:3]}, one per image.")
    if masks.size and masks.min() < 0:
        raise DataError(f"Masks of {where} include {masks.min()}; labels start at 0.")
    return x, masks.astype(np.int32)
