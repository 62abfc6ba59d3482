"""Datasets and the tf.data input pipeline.

`load_dataset` turns a dataset spec (``digits``, ``tfds:NAME``, ``folder:PATH`` or NumPy
arrays) into a `Dataset` whose splits hold *stored* images: uint8 NHWC with integer
labels, either in memory as ``(x, y)`` NumPy arrays or as an unbatched ``tf.data.Dataset``
of ``(uint8 image, int label)`` when the images are decoded lazily (folders, large tfds
sets).

`make_pipeline` turns one split into batches a model can eat: float32 in [0, 1], channels
and size adapted to the model's input shape, shuffled and augmented when training.
`to_model_input` is the same deterministic conversion as a pure TF function, so an
exported SavedModel can accept raw uint8 images.

Splits of named datasets (digits, tfds, folders) are fixed (``random_state=0``) so test
scores are comparable between runs and seeds.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf

from cnnbuilder.errors import DataError

__all__ = [
    "AUGMENTATIONS",
    "Dataset",
    "load_dataset",
    "make_pipeline",
    "split_size",
    "to_model_input",
]

Split = Union[tuple[np.ndarray, np.ndarray], tf.data.Dataset]

SPEC_FORMS = (
    "'digits' (scikit-learn's bundled 8x8 handwritten digits, resized to 32x32), "
    "'tfds:NAME' (a TensorFlow Datasets name such as tfds:cifar10), "
    "'folder:PATH' (a folder with one sub-folder of images per class), "
    "or, from Python, NumPy arrays (x, y) or {'train': (x, y), 'test': (x, y)}"
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# PIL modes whose pixels carry no colour; everything else (RGB, RGBA, P, CMYK...) is colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# A tfds set is read into memory below these sizes (cifar10: 60k images, 184 MB).
_IN_MEMORY_MAX_EXAMPLES = 200_000
_IN_MEMORY_MAX_BYTES = 2 * 1024**3
# Split seed of the named datasets: fixed on purpose, see the module docstring.
_FIXED_SPLIT_STATE = 0
# Shuffle buffer for streamed splits whose elements may be large decoded images.
_STREAM_SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: stored uint8 images split into train / validation / test.

    Each split is ``(x, y)`` NumPy arrays (x uint8 NHWC, y int64) or an unbatched
    ``tf.data.Dataset`` of ``(uint8 HWC image, int64 label)``. ``image_shape`` is the
    (H, W, C) of the stored images; H and W are None when the images differ in size.
    """

    name: str
    class_names: list[str]
    image_shape: tuple[int | None, int | None, int]
    train: Split
    validation: Split
    test: Split

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


# --------------------------------------------------------------------------- loading


def load_dataset(
    spec: Any,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    validation_split: float = 0.1,
    test_split: float = 0.2,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load a dataset from a spec.

    Args:
        spec: ``"digits"``, ``"tfds:NAME"``, ``"folder:PATH"``, a tuple ``(x, y)`` of
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

    Raises:
        DataError: the spec is malformed or the data cannot be found, read or used.
    """
    _check_fractions(validation_split, test_split)
    if isinstance(spec, str):
        if class_names is not None:
            raise DataError(
                f"class_names= is only for NumPy arrays; dataset {spec!r} names its own "
                "classes."
            )
        return _load_named(spec, data_dir, validation_split, test_split)
    if isinstance(spec, (tuple, list, Mapping)):
        return _load_arrays(spec, class_names, seed, validation_split, test_split)
    raise DataError(
        f"Unknown dataset spec {spec!r} (a {type(spec).__name__}). Expected {SPEC_FORMS}."
    )


def _load_named(spec: str, data_dir, validation_split: float, test_split: float) -> Dataset:
    """Dispatch a string spec to its loader."""
    kind, sep, rest = spec.partition(":")
    if spec == "digits":
        return _load_digits(validation_split, test_split)
    if sep and kind == "tfds":
        return _load_tfds(rest.strip(), data_dir, validation_split, test_split)
    if sep and kind == "folder":
        return _load_folder(rest.strip(), validation_split, test_split)
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


def _stratified_split(
    labels: np.ndarray, validation_split: float, test_split: float, random_state: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, validation, test); both fractions are of all examples."""
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


def _take(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) examples at `indices`."""
    return x[indices], y[indices]


def _load_digits(validation_split: float, test_split: float) -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits as 32x32x1 uint8, with a fixed split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch to the 0..255 range of ordinary images.
    images = digits.images.astype(np.float32)[..., np.newaxis] * (255.0 / 16.0)
    resized = tf.image.resize(images, (32, 32), method="bilinear").numpy()
    x = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    y = digits.target.astype(np.int64)
    train, validation, test = _stratified_split(
        y, validation_split, test_split, _FIXED_SPLIT_STATE
    )
    return Dataset(
        name="digits",
        class_names=[str(i) for i in range(10)],
        image_shape=(32, 32, 1),
        train=_take(x, y, train),
        validation=_take(x, y, validation),
        test=_take(x, y, test),
    )


# ----------------------------------------------------------------------------- tfds


def _load_tfds(name: str, data_dir, validation_split: float, test_split: float) -> Dataset:
    """A TensorFlow Datasets image-classification set that is prepared on disk."""
    import tensorflow_datasets as tfds

    if not name:
        raise DataError("Dataset spec 'tfds:' names no dataset; write e.g. tfds:cifar10.")
    builder = _tfds_builder(tfds, name, data_dir)
    _ensure_prepared(builder, name)
    info = builder.info
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
    """Download and prepare the set if it is not on disk; explain how to fix a failure."""
    if builder.is_prepared():
        return
    try:
        builder.download_and_prepare()
    except Exception as error:  # noqa: BLE001 - network and manual-download errors vary
        raise DataError(
            f"Dataset tfds:{name} is not on disk and cannot be downloaded here "
            f"({type(error).__name__}: {_first_line(error)}). TensorFlow Datasets looks "
            f"for it in {builder.data_dir} (data dir {builder.data_dir_root}). On a "
            f"machine with internet run `tfds build {name} --data_dir DIR`, copy DIR to "
            "this machine and pass --data-dir DIR (data_dir=DIR from Python, or set "
            "TFDS_DATA_DIR)."
        ) from None


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
    train, validation, test = _stratified_split(
        y, held_validation, held_test, _FIXED_SPLIT_STATE
    )
    return {
        "train": _take(x, y, train),
        "validation": (
            _tfds_numpy(tfds, builder, plan["validation"])
            if plan["validation"]
            else _take(x, y, validation)
        ),
        "test": _tfds_numpy(tfds, builder, plan["test"]) if plan["test"] else _take(x, y, test),
    }


def _tfds_streamed_splits(
    builder, info, plan, validation_split: float, test_split: float
) -> dict[str, Split]:
    """tf.data splits; missing validation/test are fixed slices of the end of train."""
    n = info.splits["train"].num_examples
    n_test = 0 if plan["test"] else math.ceil(n * test_split)
    n_validation = 0 if plan["validation"] else math.ceil(n * validation_split)
    n_train = n - n_test - n_validation
    names = {
        "train": f"train[:{n_train}]",
        "validation": plan["validation"] or f"train[{n_train}:{n_train + n_validation}]",
        "test": plan["test"] or f"train[{n_train + n_validation}:]",
    }
    return {
        key: builder.as_dataset(split=split, as_supervised=True)
        for key, split in names.items()
    }


# --------------------------------------------------------------------------- folders

# Lazily decoded folder splits -> their (paths, labels, channels, size), so that
# make_pipeline can shuffle file names instead of buffering decoded images.
_FILE_SOURCES: "weakref.WeakKeyDictionary[tf.data.Dataset, tuple]" = (
    weakref.WeakKeyDictionary()
)


def _load_folder(path: str, validation_split: float, test_split: float) -> Dataset:
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
    splits = _stratified_split(labels, validation_split, test_split, _FIXED_SPLIT_STATE)
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


def _decode_files(
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
    split = _decode_files(files, channels, size)
    _FILE_SOURCES[split] = (paths, labels, channels, size)
    return split


# ---------------------------------------------------------------------------- arrays


def _load_arrays(
    spec, class_names, seed: int, validation_split: float, test_split: float
) -> Dataset:
    """Caller-supplied NumPy arrays: a single (x, y) pair (split here) or a dict of splits."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"train", "validation", "test"}
        missing = {"train", "test"} - set(spec)
        if unknown or missing:
            raise DataError(
                f"A dict dataset needs the keys 'train' and 'test' (and optionally "
                f"'validation'), each an (x, y) pair; got keys {sorted(map(str, spec))}."
            )
        splits = {key: _check_pair(value, key) for key, value in spec.items()}
        if "validation" not in splits:
            x, y = splits["train"]
            train, validation, _ = _stratified_split(y, validation_split, 0.0, seed)
            splits["train"], splits["validation"] = _take(x, y, train), _take(x, y, validation)
    else:
        x, y = _check_pair(spec, "arrays")
        train, validation, test = _stratified_split(y, validation_split, test_split, seed)
        splits = {
            "train": _take(x, y, train),
            "validation": _take(x, y, validation),
            "test": _take(x, y, test),
        }
    shapes = {key: pair[0].shape[1:] for key, pair in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"The splits hold images of different shapes {shapes}; all splits need the "
            "same (H, W, C)."
        )
    num_labels = 1 + max((int(pair[1].max()) for pair in splits.values() if len(pair[1])))
    return Dataset(
        name="arrays",
        class_names=_array_class_names(class_names, num_labels),
        image_shape=tuple(int(d) for d in shapes["train"]),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
    )


def _check_pair(pair, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (x, y) pair; return (uint8 NHWC images, int64 labels)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        length = f" of length {len(pair)}" if hasattr(pair, "__len__") else ""
        raise DataError(
            f"Dataset {where} must be a pair (x, y) of NumPy arrays, got "
            f"{type(pair).__name__}{length}."
        )
    x, y = np.asarray(pair[0]), np.asarray(pair[1])
    return _check_images(x, where), _check_labels(y, len(x), where)


def _check_images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 NHWC images from uint8/integer 0..255 or float 0..1 arrays, NHW or NHWC."""
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 2, 3, 4) or 0 in x.shape:
        raise DataError(
            f"Images x of {where} have shape {x.shape}; expected a non-empty (N, H, W) or "
            "(N, H, W, C) array with C in 1..4."
        )
    if x.dtype == np.uint8:
        return x
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
    names = [str(n) for n in class_names]
    if len(names) < num_labels:
        raise DataError(
            f"class_names has {len(names)} names but the labels go up to "
            f"{num_labels - 1}; give one name per class."
        )
    if len(set(names)) != len(names):
        raise DataError(f"class_names repeats a name: {names}.")
    return names


# -------------------------------------------------------------------------- pipeline


def to_model_input(images, input_shape: Sequence[int | None]) -> tf.Tensor:
    """Convert stored images to model input: float32 in [0, 1], channels and size adapted.

    `images` is a uint8 batch (N, H, W, C) or one image (H, W, C); float images are
    taken as already scaled to [0, 1]. Channels change 1->3 by tiling, 3->1 with
    `tf.image.rgb_to_grayscale`, and 4->3 / 2->1 by dropping alpha. Sizes change with
    antialiased bilinear resizing (identical to bilinear when enlarging). Pure TF, so it
    can sit inside a SavedModel signature.
    """
    target_h, target_w, target_c = _check_input_shape(input_shape)
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    if images.shape.rank != 4 or images.shape[-1] is None:
        raise DataError(
            f"to_model_input needs images of shape (N, H, W, C) or (H, W, C) with a known "
            f"C, got {images.shape}."
        )
    source_c = images.shape[-1]
    if images.dtype == tf.uint8:
        x = tf.cast(images, tf.float32) / 255.0
    else:
        x = tf.cast(images, tf.float32)
    # Fewer channels first makes the resize cheaper; more channels last, likewise.
    if target_c < source_c:
        x = _resize(_adapt_channels(x, source_c, target_c), target_h, target_w)
    else:
        x = _adapt_channels(_resize(x, target_h, target_w), source_c, target_c)
    return x[0] if single else x


def _check_input_shape(input_shape) -> tuple[int | None, int | None, int]:
    """(H, W, C) with positive ints (H and W may be None: keep the stored size)."""
    try:
        h, w, c = input_shape
    except (TypeError, ValueError):
        raise DataError(f"input_shape must be (H, W, C), got {input_shape!r}.") from None
    if not (
        isinstance(c, (int, np.integer)) and c > 0
        and all(d is None or (isinstance(d, (int, np.integer)) and d > 0) for d in (h, w))
    ):
        raise DataError(
            f"input_shape must be (H, W, C) with positive integers (H, W may be None), "
            f"got {input_shape!r}."
        )
    return (None if h is None else int(h)), (None if w is None else int(w)), int(c)


def _adapt_channels(x: tf.Tensor, source: int, target: int) -> tf.Tensor:
    """Change the channel count of float images (N, H, W, source) to `target`."""
    if source == target:
        return x
    if source in (2, 4):  # grey+alpha or RGBA: alpha carries no class information
        x, source = x[..., : source - 1], source - 1
    if source == target:
        return x
    if (source, target) == (1, 3):
        return tf.tile(x, [1, 1, 1, 3])
    if (source, target) == (3, 1):
        return tf.image.rgb_to_grayscale(x)
    raise DataError(
        f"Cannot adapt images with {source} channels to a model input with {target} "
        "channels; supported: 1<->3, and 2->1 / 4->3 by dropping alpha."
    )


def _resize(x: tf.Tensor, height: int | None, width: int | None) -> tf.Tensor:
    """Resize (N, H, W, C) images to (height, width); a no-op where sizes already match."""
    if height is None and width is None:
        return x
    shape = tf.shape(x)
    size = (
        shape[1] if height is None else height,
        shape[2] if width is None else width,
    )
    if x.shape[1] == height and x.shape[2] == width:
        return x
    # Antialiasing matters only when shrinking, and costs ~5x when enlarging.
    enlarging = all(
        known is not None and (target is None or target >= known)
        for known, target in ((x.shape[1], height), (x.shape[2], width))
    )
    resized = tf.image.resize(x, size, method="bilinear", antialias=not enlarging)
    # Interpolation is a convex combination; clip only float rounding at the edges.
    return tf.clip_by_value(resized, 0.0, 1.0)


def _random_shift(images: tf.Tensor, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad each image by `pad` pixels and crop back to size at a random offset.

    Each image of the batch gets its own offset, drawn statelessly from `seed`.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    shifted = tf.gather(shifted, cols, axis=2, batch_dims=1)
    return tf.ensure_shape(shifted, images.shape)


def _augment_crop(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """CIFAR augmentation (He et al. 2016): zero-pad 4 pixels, random crop back to size."""
    return _random_shift(images, 4, seed)


def _augment_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip, independently per image."""
    return tf.image.stateless_random_flip_left_right(images, seed=seed)


def _augment_translate(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random shifts of up to 2 pixels with zero fill (digits: no flips)."""
    return _random_shift(images, 2, seed)


# Each takes a float32 batch (N, H, W, C) at model-input size and a stateless seed of
# shape (2,), and returns a batch of the same shape. Pixel counts are model-input pixels.
AUGMENTATIONS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "crop": _augment_crop,
    "flip": _augment_flip,
    "translate": _augment_translate,
}


def _augmentation_names(augment) -> list[str]:
    """Normalize `augment` (None, a name or a list of names) to a list of known names."""
    if augment is None:
        return []
    names = [augment] if isinstance(augment, str) else augment
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"augment must be None, a name or a list of names from "
            f"{sorted(AUGMENTATIONS)}, got {augment!r}."
        )
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise DataError(
            f"Unknown augmentation {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(sorted(AUGMENTATIONS))}."
        )
    return list(names)


def make_pipeline(
    split: Split,
    *,
    input_shape: Sequence[int | None],
    batch_size: int,
    training: bool,
    augment: str | Sequence[str] | None = None,
    seed: int = 0,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1] shaped like `input_shape`, int labels).

    With ``training=True`` the examples are shuffled (the whole split in memory; file
    names for folders; a 10,000-example buffer for other streams) and `augment` is applied
    per batch; both are deterministic given `seed` and differ from epoch to epoch. With
    ``training=False`` the order is the split's and nothing random happens.
    ``repeat=True`` repeats forever (pass ``steps_per_epoch`` to ``fit``).
    """
    _check_input_shape(input_shape)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")
    names = _augmentation_names(augment) if training else []
    if isinstance(split, tf.data.Dataset):
        batches = _stream_batches(split, input_shape, batch_size, training, seed, repeat)
    else:
        batches = _array_batches(split, input_shape, batch_size, training, seed, repeat)
    if names:
        batches = _augment_batches(batches, names, seed)
    return batches.prefetch(tf.data.AUTOTUNE)


def _convert_batch(input_shape):
    """A map function converting a uint8 (images, labels) batch to model input."""

    def convert(images, labels):
        return to_model_input(images, input_shape), labels

    return convert


def _array_batches(split, input_shape, batch_size, training, seed, repeat) -> tf.data.Dataset:
    """Batches from in-memory arrays: shuffle indices, gather whole batches, convert."""
    try:
        x, y = split
    except (TypeError, ValueError):
        raise DataError(
            f"A split must be (x, y) NumPy arrays or a tf.data.Dataset, got "
            f"{type(split).__name__}."
        ) from None
    x = _check_images(np.asarray(x), "the split") if len(x) else np.asarray(x)
    images, labels = tf.constant(x), tf.constant(np.asarray(y))
    # Shuffling indices and gathering a batch at once is far cheaper than a shuffle
    # buffer that copies every image one by one.
    indices = tf.data.Dataset.range(len(y))
    if training:
        indices = indices.shuffle(max(len(y), 1), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    batches = indices.batch(batch_size).map(
        lambda i: (tf.gather(images, i), tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return batches.map(_convert_batch(input_shape), num_parallel_calls=tf.data.AUTOTUNE)


def _stream_batches(split, input_shape, batch_size, training, seed, repeat) -> tf.data.Dataset:
    """Batches from a tf.data split of unbatched (uint8 image, label)."""
    source = _FILE_SOURCES.get(split)
    if training and source is not None:
        paths, labels, channels, size = source
        # Shuffle file names, then decode: no buffer of decoded images.
        files = tf.data.Dataset.from_tensor_slices((paths.astype(str), labels))
        files = files.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
        split = _decode_files(files, channels, size)
    elif training:
        known = split_size(split)
        buffer = min(known, _STREAM_SHUFFLE_BUFFER) if known else _STREAM_SHUFFLE_BUFFER
        split = split.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        split = split.repeat()
    image_spec = split.element_spec[0]
    convert = _convert_batch(input_shape)
    if image_spec.shape.is_fully_defined():
        return split.batch(batch_size).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    # Images of different sizes must reach a common size before they can be batched.
    if None in tuple(input_shape)[:2]:
        raise DataError(
            f"The images differ in size (shape {image_spec.shape}), so input_shape "
            f"{tuple(input_shape)} needs a fixed height and width to resize them to."
        )
    return split.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def _augment_batches(batches: tf.data.Dataset, names: list[str], seed: int) -> tf.data.Dataset:
    """Apply the named augmentations to each batch with per-batch stateless seeds."""
    # A seeded random stream that changes every epoch yet replays with the same seed.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment(batch, batch_seed):
        images, labels = batch
        op_seeds = tf.random.experimental.stateless_split(batch_seed, num=len(names))
        for index, name in enumerate(names):
            images = AUGMENTATIONS[name](images, op_seeds[index])
        return images, labels

    return tf.data.Dataset.zip(batches, seeds).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE
    )
