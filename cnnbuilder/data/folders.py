"""Image folders (``folder:PATH``): one sub-folder of images per class, decoded lazily.

The sorted sub-folder names are the class names. Image headers are scanned once (channel
count, common size) without decoding; the pixels are decoded by tf.data when a pipeline
reads them. A training pipeline shuffles the *file names* of a folder split (see
`file_source`) rather than buffering decoded images.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.splits import FIXED_SPLIT_STATE, Dataset, stratified_split
from cnnbuilder.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "decode_files", "file_source", "load_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# PIL modes whose pixels carry no colour; everything else (RGB, RGBA, P, CMYK...) is colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Lazily decoded folder splits -> their (paths, labels, channels, size), so that
# make_pipeline can shuffle file names instead of buffering decoded images.
_FILE_SOURCES: "weakref.WeakKeyDictionary[tf.data.Dataset, tuple]" = (
    weakref.WeakKeyDictionary()
)


def load_folder(path: str, validation_split: float, test_split: float) -> Dataset:
    """A folder with one sub-folder of images per class, decoded lazily by tf.data."""
    root = _check_folder(path)
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if not class_dirs:
        raise DataError(
            f"Dataset folder {root} has no class sub-folders. Expected one sub-folder "
            f"per class (e.g. {root}/cat/1.png, {root}/dog/2.jpg), whose sorted names "
            "become the class names."
        )
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise DataError(
                f"Class folder {class_dir} holds no images; expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}. Remove the folder or add images."
            )
        paths += files
        labels += [label] * len(files)
    channels, size = _scan_image_headers(paths)
    labels = np.asarray(labels, dtype=np.int64)
    str_paths = np.asarray([str(p) for p in paths])
    splits = stratified_split(labels, validation_split, test_split, FIXED_SPLIT_STATE)
    train, validation, test = (
        _file_split(str_paths[i], labels[i], channels, size) for i in splits
    )
    return Dataset(
        name=f"folder:{root}",
        class_names=[d.name for d in class_dirs],
        image_shape=(*(size or (None, None)), channels),
        train=train,
        validation=validation,
        test=test,
    )


def _check_folder(path: str) -> Path:
    """The absolute dataset folder, which must exist and be a non-empty directory."""
    if not path:
        raise DataError("Dataset spec 'folder:' names no folder; write folder:PATH.")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DataError(
            f"Dataset folder {root} (from folder:{path}) does not exist. Expected a "
            "folder with one sub-folder of images per class."
        )
    if not root.is_dir():
        raise DataError(f"Dataset path {root} (from folder:{path}) is not a folder.")
    if not any(root.iterdir()):
        raise DataError(
            f"Dataset folder {root} is empty. Expected one sub-folder of images per class."
        )
    return root


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under a class folder (recursively, sorted, hidden files skipped)."""
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
    )


def _scan_image_headers(paths: Sequence[Path]) -> tuple[int, tuple[int, int] | None]:
    """(channels, common (H, W) or None) from the image headers, without decoding.

    Channels is 1 when every image is grey and 3 otherwise (alpha is dropped).
    """
    from PIL import Image, UnidentifiedImageError

    grey, sizes = True, set()
    for path in paths:
        try:
            with Image.open(path) as image:
                grey = grey and _is_grey(image)
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataError(
                f"Cannot read image file {path}: {error}. Remove or replace the file."
            ) from None
        sizes.add((height, width))
    size = sizes.pop() if len(sizes) == 1 else None
    return (1 if grey else 3), size


def _is_grey(image) -> bool:
    """Whether a PIL image has no colour; palette images count when their palette is grey."""
    if image.mode in ("P", "PA"):
        # Grey GIFs open as palette images; reading the palette loads only this image.
        palette = image.getpalette("RGB") or []
        return palette[0::3] == palette[1::3] == palette[2::3]
    return image.mode in _GREY_MODES


def _decode_image(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode PNG/JPEG/BMP/GIF bytes to a uint8 (H, W, channels) image."""
    if channels == 3:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)
    # TF's BMP and GIF decoders only produce colour; convert those to grey afterwards.
    colour_only = tf.logical_or(
        tf.strings.substr(contents, 0, 2) == "BM", tf.strings.substr(contents, 0, 3) == "GIF"
    )
    return tf.cond(
        colour_only,
        lambda: tf.image.rgb_to_grayscale(
            tf.io.decode_image(contents, channels=3, expand_animations=False)
        ),
        lambda: tf.io.decode_image(contents, channels=1, expand_animations=False),
    )


def decode_files(
    files: tf.data.Dataset, channels: int, size: tuple[int, int] | None
) -> tf.data.Dataset:
    """Map (path, label) to (uint8 image, label), decoding in parallel."""
    shape = (*(size or (None, None)), channels)

    def decode(path, label):
        image = _decode_image(tf.io.read_file(path), channels)
        return tf.ensure_shape(image, shape), label

    return files.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _file_split(
    paths: np.ndarray, labels: np.ndarray, channels: int, size: tuple[int, int] | None
) -> tf.data.Dataset:
    """An ordered, lazily decoded split of image files."""
    files = tf.data.Dataset.from_tensor_slices((paths.astype(str), labels))
    split = decode_files(files, channels, size)
    _FILE_SOURCES[split] = (paths, labels, channels, size)
    return split



def file_source(split) -> tuple | None:
    """(paths, labels, channels, size) of a split made by `load_folder`, else None."""
    try:
        return _FILE_SOURCES.get(split)
    except TypeError:  # not weak-referenceable: not one of ours
        return None
