"""Segmentation datasets: image folders with masks (``folder:PATH`` holding ``images/``
and ``masks/``) and the embedded teaching set ``digits-seg``.

Folder layout (see ``docs/segmentation.md``)::

    PATH/classes.txt            label-map masks: one class name per line (line index = label)
      or PATH/classes.csv       colour masks: name,r,g,b rows (`cnnbuilder.data.seg_masks`)
    PATH/images/a.jpg  ...      any image files (PNG, JPEG, BMP, GIF), in sub-folders or not
    PATH/masks/a.png   ...      one PNG per image, same relative path and file stem

or, with splits of its own, ``images/train``, ``images/val`` (or ``validation``) and
``images/test`` (``train`` required; a missing one is carved from train with the fixed
split), mirrored under ``masks/``. Without split folders every pair is split with the
fixed split of the named datasets. The void label 255 is ignored.

Every pair is checked when the folder loads, each problem naming its file: an image
without a mask, a mask without an image, an unreadable image or mask, a mask of another
size than its image, a label out of range (not below the class count and not 255), a
colour the palette does not list. Images and masks are then decoded lazily by the
pipeline, which shuffles the *file names* of a training split (`segmentation_source`).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from cnnbuilder.data.folder_walk import BadImage, walk_class
from cnnbuilder.data.image_checks import list_bad_files, read_header, undecodable
from cnnbuilder.data.images import decode_path
from cnnbuilder.data.seg_masks import VOID, ClassList, read_class_list, read_mask
from cnnbuilder.data.splits import FIXED_SPLIT_STATE, Dataset, stratified_split
from cnnbuilder.errors import DataError

__all__ = [
    "DIGITS_SEG_THRESHOLD",
    "decode_pairs",
    "digits_segmentation",
    "is_segmentation_folder",
    "load_segmentation_folder",
    "segmentation_source",
]

# A digits-seg pixel is its digit's stroke when its grey value reaches this (0..255).
DIGITS_SEG_THRESHOLD = 128
_SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation",
                  "test": "test"}
# Lazily decoded segmentation splits -> (image paths, mask paths, channels, size, classes).
_SOURCES: "weakref.WeakKeyDictionary[tf.data.Dataset, tuple]" = weakref.WeakKeyDictionary()


def digits_segmentation(digits: Dataset) -> Dataset:
    """``digits-seg``: the ``digits`` images and split, each pixel labelled background (0)
    or its digit's class (digit + 1) where the stroke is (grey value >=
    `DIGITS_SEG_THRESHOLD`). A teaching set: 11 classes, 32x32, every label exact."""
    def masks(split):
        """(images, masks) of one digits split."""
        x, y = split
        stroke = x[..., 0] >= DIGITS_SEG_THRESHOLD
        return x, np.where(stroke, (y + 1)[:, None, None], 0).astype(np.uint8)

    return Dataset(
        name="digits-seg",
        class_names=["background"] + [str(i) for i in range(10)],
        image_shape=digits.image_shape,
        train=masks(digits.train),
        validation=masks(digits.validation),
        test=masks(digits.test),
        task="segmentation",
        ignore_label=None,
    )


def is_segmentation_folder(root: Path) -> bool:
    """Whether a dataset folder is laid out for segmentation (``images/`` and ``masks/``)."""
    return (root / "images").is_dir() and (root / "masks").is_dir()


def load_segmentation_folder(root: Path, validation_split: float, test_split: float,
                             skip_bad_images: bool = False) -> Dataset:
    """A segmentation folder (module docstring), every image and mask checked up front.

    Raises:
        DataError: a missing or bad class list, no pairs, and (unless `skip_bad_images`,
            which leaves those pairs out and lists them in `Dataset.skipped`) each bad pair,
            naming the files.
    """
    classes = read_class_list(root)
    groups = _split_groups(root)
    pairs: dict[str, list[tuple[str, str]]] = {}
    problems: list[BadImage] = []
    for split, (image_dir, mask_dir) in groups.items():
        found, bad = _pair_files(root, image_dir, mask_dir)
        pairs[split] = found
        problems += bad
    everything = [p for found in pairs.values() for p in found]
    headers, channels, bad = _check_pairs(everything, classes)
    problems = sorted(problems + bad)
    if problems and not skip_bad_images:
        raise DataError(
            f"{len(problems)} problem(s) in the segmentation folder {root} "
            f"({len(everything)} image/mask pairs found): {list_bad_files(problems)}. "
            "Fix or remove those "
            "files, or pass skip_bad_images=True (cnnbuilder train --skip-bad-images) to leave "
            "those pairs out.")
    usable = {split: [p for p in found if p[0] in headers] for split, found in pairs.items()}
    if not (usable.get("train") or usable.get("all")):
        raise DataError(f"Segmentation folder {root} has no usable image/mask pairs for "
                        "training (images/ and masks/ with files of the same name).")
    sizes = {headers[image] for found in usable.values() for image, _ in found}
    size = sizes.pop() if len(sizes) == 1 else None
    splits = _fixed_splits(usable, validation_split, test_split)
    made = {k: _pair_split(v, channels, size, classes) for k, v in splits.items()}
    return Dataset(
        name=f"folder:{root}", class_names=list(classes.names),
        image_shape=(*(size or (None, None)), channels), skipped=tuple(b.path for b in problems),
        task="segmentation", ignore_label=VOID, palette=classes.palette, **made)


def _split_groups(root: Path) -> dict[str, tuple[Path, Path]]:
    """split name -> (image folder, mask folder): the split folders, or all as train."""
    images, masks = root / "images", root / "masks"
    named = {d.name: d for d in images.iterdir() if d.is_dir() and d.name in _SPLIT_FOLDERS}
    if not named:
        return {"all": (images, masks)}
    if "train" not in named:
        raise DataError(f"{images} has split folders ({', '.join(sorted(named))}) but no "
                        "train/; add images/train (and masks/train).")
    if "val" in named and "validation" in named:
        raise DataError(f"{images} has both val/ and validation/; keep one.")
    loose = sorted(str(p) for p in images.iterdir()
                   if not p.name.startswith(".") and p.name not in named)
    if loose:
        raise DataError(f"{images} has split folders, so everything must be inside them, "
                        f"but {', '.join(loose[:5])} is not; move it into train/, val/ or test/.")
    return {_SPLIT_FOLDERS[name]: (folder, masks / name) for name, folder in named.items()}


def _key(path: Path, folder: Path) -> str:
    """The matching key of a file: its path below `folder`, without the extension."""
    return path.relative_to(folder).with_suffix("").as_posix()


def _pair_files(root: Path, image_dir: Path, mask_dir: Path):
    """([(image, mask)], problems) of one split's folders, matched by relative stem."""
    seen = {os.path.realpath(image_dir), os.path.realpath(mask_dir)}
    images, bad = walk_class(image_dir, root, seen)
    masks, mask_bad = walk_class(mask_dir, root, seen) if mask_dir.is_dir() else ([], [])
    bad = list(bad) + list(mask_bad)
    by_key: dict[str, Path] = {}
    for image in images:
        key = _key(image, image_dir)
        if key in by_key:
            bad.append(BadImage(str(image), f"a second image named {key} (also {by_key[key]}); "
                                "masks are matched by file stem, so stems must differ"))
        else:
            by_key[key] = image
    mask_by_key: dict[str, Path] = {}
    for mask in masks:
        key = _key(mask, mask_dir)
        if mask.suffix.lower() != ".png":
            bad.append(BadImage(str(mask), "a mask that is not a PNG (masks must be lossless)"))
        elif key not in by_key:
            bad.append(BadImage(str(mask), f"a mask without an image (no {image_dir}/{key}.*)"))
        else:
            mask_by_key[key] = mask
    pairs = []
    for key, image in by_key.items():
        if key in mask_by_key:
            pairs.append((str(image), str(mask_by_key[key])))
        else:
            bad.append(BadImage(str(image), f"an image without a mask (no {mask_dir}/{key}.png)"))
    return sorted(pairs), bad


def _check_pairs(pairs, classes: ClassList):
    """({usable image: (h, w)}, channels, problems): headers, masks (size, labels), decode."""
    headers, grey, problems = {}, {}, []
    count = len(classes.names)
    for image, mask in pairs:
        header = read_header(image)
        if isinstance(header, BadImage):
            problems.append(header)
            continue
        try:
            labels = read_mask(mask, classes)
        except DataError as error:
            problems.append(BadImage(mask, " ".join(str(error).split())))
            continue
        if labels.shape != header.size:
            (h, w), (mh, mw) = header.size, labels.shape
            problems.append(BadImage(mask, f"mask of {mw}x{mh} pixels but its image {image} "
                                     f"is {w}x{h}"))
            continue
        wrong = (labels >= count) & (labels != VOID)
        if wrong.any():
            problems.append(BadImage(mask, f"label {int(labels[wrong].max())} out of range at "
                                     f"{int(wrong.sum())} pixel(s): the {count} classes are "
                                     f"labels 0-{count - 1}, and {VOID} is void"))
            continue
        headers[image], grey[image] = header.size, header.grey
    channels = 1 if headers and all(grey.values()) else 3
    paths = list(headers)
    for failure in undecodable(paths, [headers[p] for p in paths], channels):
        del headers[failure.path]
        problems.append(failure)
    return headers, channels, problems


def _fixed_splits(usable: dict, validation_split: float, test_split: float) -> dict:
    """train/validation/test pair lists: the folder's own, the missing ones carved from
    train (or from everything) with the fixed split."""
    train = usable.pop("all", None) or usable.pop("train")
    own = {k: usable[k] for k in ("validation", "test") if k in usable}
    held_validation = 0.0 if "validation" in own else validation_split
    held_test = 0.0 if "test" in own else test_split
    keep, validation, test = stratified_split(np.zeros(len(train)), held_validation,
                                              held_test, FIXED_SPLIT_STATE)
    return {
        "train": [train[i] for i in keep],
        "validation": own.get("validation", [train[i] for i in validation]),
        "test": own.get("test", [train[i] for i in test]),
    }


def decode_pairs(pairs: tf.data.Dataset, channels: int, size, classes: ClassList):
    """Map (image path, mask path) to (uint8 (H, W, C) image, uint8 (H, W) mask)."""
    shape = (*(size or (None, None)), channels)

    def mask_of(name):
        """The label map of the mask file named by `name` (bytes)."""
        name = name.item() if isinstance(name, np.ndarray) else name
        return read_mask(name.decode() if isinstance(name, bytes) else str(name), classes)

    def decode(image_path, mask_path):
        """One (image, mask) pair decoded."""
        image = tf.ensure_shape(decode_path(image_path, channels), shape)
        mask = tf.numpy_function(mask_of, [mask_path], tf.uint8, stateful=False)
        return image, tf.ensure_shape(mask, shape[:2])

    return pairs.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _pair_split(pairs, channels: int, size, classes: ClassList) -> tf.data.Dataset:
    """An ordered, lazily decoded split of (image, mask) files."""
    images = np.asarray([p[0] for p in pairs], dtype=str)
    masks = np.asarray([p[1] for p in pairs], dtype=str)
    split = decode_pairs(tf.data.Dataset.from_tensor_slices((images, masks)), channels, size,
                         classes)
    _SOURCES[split] = (images, masks, channels, size, classes)
    return split


def segmentation_source(split) -> tuple | None:
    """(image paths, mask paths, channels, size, classes) of a folder segmentation split,
    else None."""
    try:
        return _SOURCES.get(split)
    except TypeError:
        return None
