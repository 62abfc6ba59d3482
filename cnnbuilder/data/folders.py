"""Image folders (``folder:PATH``): one sub-folder of images per class, decoded lazily.

The sorted sub-folder names are the class names (at least two). Every image file is
checked when the folder is loaded (`cnnbuilder.data.image_checks`: its header, then one
decode by the training pipeline's own decoder), so that training never meets a bad file
in the middle of an epoch: bad files are an error naming them, or, with
``skip_bad_images``, left out and listed in `Dataset.skipped`. How files are found
(links, loops, hidden files) is `cnnbuilder.data.folder_walk`'s part.

The pixels are decoded by tf.data when a pipeline reads them. A training pipeline
shuffles the *file names* of a folder split (see `file_source`) rather than buffering
decoded images.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from cnnbuilder.data.folder_walk import IMAGE_EXTENSIONS, BadImage, class_folders, walk_class
from cnnbuilder.data.image_checks import (
    Header,
    bad_images_error,
    read_header,
    undecodable,
)
from cnnbuilder.data.images import decode_path
from cnnbuilder.data.labels import check_class_names
from cnnbuilder.data.splits import FIXED_SPLIT_STATE, Dataset, stratified_split
from cnnbuilder.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "check_output_outside", "decode_files", "file_source", "load_folder"]

# Lazily decoded folder splits -> their (paths, labels, channels, size), so that
# make_pipeline can shuffle file names instead of buffering decoded images.
_FILE_SOURCES: "weakref.WeakKeyDictionary[tf.data.Dataset, tuple]" = (
    weakref.WeakKeyDictionary()
)


def load_folder(
    path: str, validation_split: float, test_split: float, skip_bad_images: bool = False
) -> Dataset:
    """A folder with one sub-folder of images per class, every image checked up front.

    Args:
        path: the dataset folder.
        validation_split: fraction of all (usable) images held out for validation.
        test_split: fraction of all (usable) images held out for testing.
        skip_bad_images: leave out the files that cannot be used (listed in
            `Dataset.skipped`) instead of raising.

    Raises:
        DataError: no or a single class folder, a class without images, a class folder
            that loops; bad image files (unless skipped), naming them.
    """
    root = _check_folder(path)
    class_dirs = _check_classes(root, class_folders(root))
    files, bad = _find_images(root, class_dirs)
    headers, channels, bad_files = _check_files(f for class_files in files for f in class_files)
    bad = sorted(bad + bad_files)
    if bad and not skip_bad_images:
        # Every candidate is now in `headers` (usable) or in `bad`, beside loops and such.
        raise bad_images_error(root, bad, len(headers) + len(bad))
    paths, labels = [], []
    for label, (class_dir, class_files) in enumerate(zip(class_dirs, files)):
        usable = [str(f) for f in class_files if str(f) in headers]
        if not usable:
            raise DataError(
                f"Class folder {class_dir} has no usable images: all "
                f"{sum(1 for b in bad if _under(b.path, class_dir))} were skipped as bad. "
                "Remove the folder or add images."
            )
        paths += usable
        labels += [label] * len(usable)
    sizes = {headers[p].size for p in paths}
    size = sizes.pop() if len(sizes) == 1 else None
    labels = np.asarray(labels, dtype=np.int64)
    str_paths = np.asarray(paths)
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
        skipped=tuple(b.path for b in bad),
    )


def check_output_outside(dataset, output, option: str = "output") -> None:
    """Refuse an output directory inside a ``folder:`` dataset: the run's files (its
    model, plots, logs) would become a class, or images, of the next run on that folder."""
    if output is None or not isinstance(dataset, str) or not dataset.startswith("folder:"):
        return
    root = Path(dataset.partition(":")[2].strip()).expanduser().resolve()
    target = Path(output).expanduser().resolve()
    if target == root or target.is_relative_to(root):
        raise DataError(
            f"{option} {output} lies inside the dataset folder {root}: the run's files would "
            "become images (or a class) of the next run on that folder. Write the run "
            "outside the dataset.")


def _check_classes(root: Path, class_dirs: list[Path]) -> list[Path]:
    """The class folders, which must be at least two."""
    if not class_dirs:
        raise DataError(
            f"Dataset folder {root} has no class sub-folders. Expected one sub-folder "
            f"per class (e.g. {root}/cat/1.png, {root}/dog/2.jpg), whose sorted names "
            "become the class names."
        )
    if len(class_dirs) == 1:
        raise DataError(
            f"Dataset folder {root} has a single class sub-folder, {class_dirs[0].name}; a "
            "classifier needs at least two classes. Add a sub-folder of images per class."
        )
    check_class_names([d.name for d in class_dirs], f"Dataset folder {root}")
    return class_dirs


def _find_images(root: Path, class_dirs: list[Path]) -> tuple[list[list[Path]], list[BadImage]]:
    """(candidate files per class, bad entries met on the way)."""
    seen = {os.path.realpath(d) for d in class_dirs}
    files, bad = [], []
    for class_dir in class_dirs:
        class_files, class_bad = walk_class(class_dir, root, seen)
        if not class_files and not class_bad:
            raise DataError(
                f"Class folder {class_dir} holds no images; expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}. Remove the folder or add images."
            )
        files.append(class_files)
        bad += class_bad
    return files, bad


def _check_files(candidates) -> tuple[dict[str, Header], int, list[BadImage]]:
    """(usable files and their headers, channel count, bad files) of candidate files."""
    headers, bad = {}, []
    for candidate in map(str, candidates):
        header = read_header(candidate)
        if isinstance(header, BadImage):
            bad.append(header)
        else:
            headers[candidate] = header
    channels, failed = _decode_check(headers)
    return headers, channels, bad + failed


def _decode_check(headers: dict[str, Header]) -> tuple[int, list[BadImage]]:
    """(channel count, files that fail to decode), removing those from `headers`.

    The channel count is 1 when every image is grey, else 3 (alpha is dropped). Leaving a
    bad colour file out can make the rest grey; they are then checked again as grey.
    """
    failed: list[BadImage] = []
    channels = None
    while headers:
        wanted = 1 if all(h.grey for h in headers.values()) else 3
        if wanted == channels:
            break
        channels = wanted
        paths = list(headers)
        now_failed = undecodable(paths, [headers[p].size for p in paths], channels)
        for b in now_failed:
            del headers[b.path]
        failed += now_failed
    return channels or 3, failed


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


def _under(path: str, folder: Path) -> bool:
    """Whether `path` lies below `folder` (as found, links not resolved)."""
    return Path(path).is_relative_to(folder)


def decode_files(
    files: tf.data.Dataset, channels: int, size: tuple[int, int] | None
) -> tf.data.Dataset:
    """Map (path, label) to (uint8 image, label), decoding in parallel."""
    shape = (*(size or (None, None)), channels)

    def decode(path, label):
        image = decode_path(path, channels)  # the one decoder, predict's too
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
