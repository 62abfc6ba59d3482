"""The one conversion from stored images to model input: `preprocess`.

It is what the training and evaluation pipelines (`make_pipeline`), the SavedModel's
``serving_default`` signature and therefore `predict` apply, so a model sees the same
numbers at every stage. The steps, in order:

1. **Scale** uint8 to float32 in [0, 1] (float images are taken as already in [0, 1]).
2. **Channels** (`CHANNEL_RULE`): alpha is dropped (2 -> 1, 4 -> 3), grey is tiled to
   RGB (1 -> 3), RGB becomes grey with ITU-R 601 luma (`tf.image.rgb_to_grayscale`).
   The count may be known only at run time, as in a signature taking
   ``(None, None, None, None)`` images: then the branch for that count is chosen when
   the graph runs, and it is the very computation a known count gets.
3. **Resize** to the model's (H, W) with bilinear interpolation, antialiased only when
   some side shrinks (`ANTIALIAS_RULE`: antialiasing changes nothing when enlarging but
   costs ~5x); nothing happens when the size already matches. Decided when the graph
   is built if the sizes are known, else when it runs, with the same result. With
   `crop_from` (the evaluation transform of PyTorch-world weights, torchvision's
   ``Resize(256)`` + ``CenterCrop(224)``), the shorter side is resized to `crop_from`
   instead, the aspect ratio kept, and the centre (H, W) is cut out.
4. **Clip** to [0, 1] after resizing (interpolation is convex: only rounding is clipped).
5. **Normalize** (`NORMALIZATIONS`): ``unit`` keeps [0, 1]; ``tf``, ``torch`` and
   ``caffe`` are keras.applications' modes (`keras.applications.imagenet_utils`), for
   weights trained on inputs scaled that way; ``dataset`` is ``(x - mean) / std`` with
   the per-channel mean and standard deviation of a training split on the [0, 1] scale
   after steps 1-4 (`cnnbuilder.data.statistics`), as the papers of networks without
   pretrained weights normalize their inputs.

Pure TF ops, so it sits inside a SavedModel. `preprocessing_config` describes all of it
as a JSON record (a run's ``run.json`` stores it under ``"preprocessing"``; ``dataset``
records carry their ``mean`` and ``std``) and `preprocess_from_config` applies such a
record.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.centre_crop import check_crop as _check_crop
from cnnbuilder.data.centre_crop import resize_and_centre_crop as _resize_and_centre_crop
from cnnbuilder.errors import DataError

__all__ = [
    "ANTIALIAS_RULE",
    "CHANNEL_RULE",
    "NORMALIZATIONS",
    "RESIZE_METHOD",
    "check_input_shape",
    "check_normalization",
    "check_preprocessing_config",
    "normalization_args",
    "normalize",
    "normalized_range",
    "preprocess",
    "preprocess_from_config",
    "preprocessing_config",
]

RESIZE_METHOD = "bilinear"
ANTIALIAS_RULE = "when_shrinking"
CHANNEL_RULE = "drop_alpha_tile_grey_rgb_luma"
NORMALIZATIONS = ("unit", "tf", "torch", "caffe", "dataset")
# The mode whose per-channel statistics come from the training data (`mean`, `std`).
DATASET = "dataset"
# keras.applications.imagenet_utils: torch mode on [0, 1] RGB, caffe mode on 0..255 BGR.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# Stored images carry 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels.
_MAX_CHANNELS = 4
_CONFIG_KEYS = ("input_shape", "channels", "resize", "antialias", "normalization")
_STATISTICS_KEYS = ("mean", "std")  # only in a `dataset` record
_CROP_KEY = "crop_from"  # only in a record with a resize-then-centre-crop


def preprocess(images, input_shape: Sequence[int | None], *,
               normalization: str = "unit", mean=None, std=None,
               crop_from: int | None = None) -> tf.Tensor:
    """Convert stored images to model input (see the module docstring for the steps).

    Args:
        images: a uint8 batch (N, h, w, c) or one image (h, w, c) of any size, c of 1
            (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), known statically or only at
            run time. Float images are taken as already scaled to [0, 1].
        input_shape: the model's (H, W, C); H and W may be None (keep the stored size).
        normalization: one of `NORMALIZATIONS`; ``torch`` and ``caffe`` need C = 3.
        mean, std: C per-channel values on the [0, 1] scale, for ``dataset`` only.
        crop_from: resize the shorter side to this many pixels (aspect kept), then take
            the centre H×W (torchvision's evaluation: 256, or 232 for its V2 weights);
            None resizes straight to (H, W). Needs H and W, and crop_from >= both.

    Returns:
        float32 (N, H, W, C), or (H, W, C) for one image.

    Raises:
        DataError: a bad input shape or normalization, images of another rank, or a
            static channel count that cannot become C. A run-time channel count that
            cannot is a `tf.errors.InvalidArgumentError` when the graph runs.
    """
    height, width, channels = check_input_shape(input_shape)
    check_normalization(normalization, channels, mean=mean, std=std)
    _check_crop(crop_from, height, width)
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    if images.shape.rank != 4:
        raise DataError(
            f"preprocess needs images of shape (N, H, W, C) or (H, W, C), got {images.shape}."
        )
    x = tf.cast(images, tf.float32)
    if images.dtype == tf.uint8:
        x = _exact_divide(x, 255.0)
    source = images.shape[-1]
    if crop_from is not None:  # the size is done here; the channel step keeps it
        x, height, width = _resize_and_centre_crop(x, height, width, crop_from), None, None
    if source is None:
        x = _convert_any_channels(x, height, width, channels)
    else:
        x = _convert(x, source, height, width, channels)
    x = normalize(x, normalization, mean=mean, std=std)
    return x[0] if single else x


def normalize(x: tf.Tensor, normalization: str, *, mean=None, std=None) -> tf.Tensor:
    """Step 5 alone: float (…, C) images in [0, 1] to the `normalization`'s range.

    The training pipeline calls it after augmenting in [0, 1] (so padding stays black);
    `preprocess` ends with it. `mean` and `std` are the ``dataset`` mode's statistics.
    """
    if normalization == DATASET:  # the training split's channel statistics
        return _exact_divide(x - tf.constant(mean, tf.float32), tf.constant(std, tf.float32))
    if normalization == "unit":
        return x
    if normalization == "tf":  # keras: x / 127.5 - 1 on 0..255
        return x * 2.0 - 1.0
    if normalization == "torch":  # keras: (x / 255 - mean) / std, RGB
        return _exact_divide(x - tf.constant(_TORCH_MEAN), tf.constant(_TORCH_STD))
    if normalization == "caffe":  # keras: RGB -> BGR on 0..255, minus the BGR means
        return x[..., ::-1] * 255.0 - tf.constant(_CAFFE_BGR_MEAN)
    raise DataError(_unknown_normalization(normalization))


def normalized_range(normalization: str, mean=None, std=None) -> list[float]:
    """[lowest, highest] value a model input can take under `normalization` (with the
    ``dataset`` mode's `mean` and `std`)."""
    channels = 3 if mean is None else len(mean)
    black = normalize(tf.zeros([channels]), normalization, mean=mean, std=std).numpy()
    white = normalize(tf.ones([channels]), normalization, mean=mean, std=std).numpy()
    return [float(min(black.min(), white.min())), float(max(black.max(), white.max()))]


def preprocessing_config(input_shape: Sequence[int | None],
                         normalization: str = "unit", *, mean=None, std=None,
                         crop_from: int | None = None) -> dict:
    """The JSON record of everything `preprocess` does for a model of `input_shape`.

    Every field is read back by `preprocess_from_config`: ``input_shape``,
    ``normalization`` and (``dataset`` mode only) ``mean`` and ``std`` are its arguments;
    ``channels``, ``resize`` and ``antialias`` name the rules this version applies, so a
    record of other rules is refused, not misread; ``crop_from`` is there only when set.
    """
    height, width, channels = check_input_shape(input_shape)
    check_normalization(normalization, channels, mean=mean, std=std)
    _check_crop(crop_from, height, width)
    record = {
        "input_shape": [height, width, channels],
        "channels": CHANNEL_RULE,
        "resize": RESIZE_METHOD,
        "antialias": ANTIALIAS_RULE,
        "normalization": normalization,
    }
    if normalization == DATASET:
        record.update(mean=[float(v) for v in mean], std=[float(v) for v in std])
    if crop_from is not None:
        record[_CROP_KEY] = int(crop_from)
    return record


def normalization_args(config: Mapping) -> dict:
    """The normalization keywords of `preprocess` / `make_pipeline` in a checked record
    (`preprocessing_config`): ``normalization``, and ``mean`` and ``std`` for ``dataset``."""
    return {"normalization": config["normalization"],
            **{key: config[key] for key in _STATISTICS_KEYS if key in config}}


def check_preprocessing_config(config, input_shape: Sequence[int | None] | None = None) -> dict:
    """The record `config` checked field by field (and against the model's `input_shape`).

    A record written before `preprocessing_config` existed (``{"scale": 255.0, "resize":
    "bilinear", "channels": C}``, no ``normalization``) means ``unit`` preprocessing of
    `input_shape`, which it then needs.

    Raises:
        DataError: a missing or unknown field, or a value `preprocess` does not apply.
    """
    if isinstance(config, Mapping) and "normalization" not in config:
        return _legacy_config(config, input_shape)
    expected = (*_CONFIG_KEYS, *(_STATISTICS_KEYS if isinstance(config, Mapping)
                                 and config.get("normalization") == DATASET else ()),
                *((_CROP_KEY,) if isinstance(config, Mapping) and _CROP_KEY in config else ()))
    if not isinstance(config, Mapping) or set(config) != set(expected):
        keys = sorted(config) if isinstance(config, Mapping) else type(config).__name__
        raise DataError(
            f"A preprocessing record needs exactly the fields {', '.join(expected)} "
            f"(as written by preprocessing_config), got {keys}."
        )
    rules = {"channels": CHANNEL_RULE, "resize": RESIZE_METHOD, "antialias": ANTIALIAS_RULE}
    for key, rule in rules.items():
        if config[key] != rule:
            raise DataError(
                f"The preprocessing record's {key} is {config[key]!r}; this version of "
                f"cnnbuilder applies {rule!r} only."
            )
    statistics = {key: config[key] for key in (*_STATISTICS_KEYS, _CROP_KEY) if key in config}
    recorded = preprocessing_config(config["input_shape"], config["normalization"], **statistics)
    if input_shape is not None and recorded != preprocessing_config(
        input_shape, config["normalization"], **statistics
    ):
        raise DataError(
            f"The preprocessing record is for input shape {config['input_shape']}, but the "
            f"model takes {list(input_shape)}."
        )
    return recorded


def preprocess_from_config(images, config: Mapping) -> tf.Tensor:
    """`preprocess` as the record `config` (from `preprocessing_config`) says."""
    config = check_preprocessing_config(config)
    return preprocess(images, config["input_shape"], crop_from=config.get(_CROP_KEY),
                      **normalization_args(config))


def check_input_shape(input_shape) -> tuple[int | None, int | None, int]:
    """(H, W, C) with positive ints (H and W may be None: keep the stored size)."""
    try:
        h, w, c = input_shape
    except (TypeError, ValueError):
        raise DataError(f"input_shape must be (H, W, C), got {input_shape!r}.") from None
    if not (
        _positive_int(c) and all(d is None or _positive_int(d) for d in (h, w))
    ):
        raise DataError(
            f"input_shape must be (H, W, C) with positive integers (H, W may be None), "
            f"got {input_shape!r}."
        )
    return (None if h is None else int(h)), (None if w is None else int(w)), int(c)


def _exact_divide(x: tf.Tensor, divisor) -> tf.Tensor:
    """`x / divisor`, rounded the same in eager code, tf.data and a SavedModel.

    Inside a tf.function, Grappler rewrites a division by a constant into a multiplication
    by its reciprocal, which rounds differently (1 ulp) from what eager code and tf.data
    compute; DivNoNan is the same IEEE division but is not rewritten.
    """
    return tf.math.divide_no_nan(x, divisor)


# ------------------------------------------------------------------------------ checks


def _positive_int(value) -> bool:
    """Whether `value` is an integer (not a bool) above zero."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _unknown_normalization(normalization) -> str:
    """The message for a normalization that is not one of `NORMALIZATIONS`."""
    return (
        f"Unknown normalization {normalization!r}; choose from {', '.join(NORMALIZATIONS)} "
        "(unit: [0, 1]; tf, torch, caffe: the keras.applications modes; dataset: the "
        "training split's channel mean and std)."
    )


def check_normalization(normalization, channels: int, *, mean=None, std=None) -> None:
    """DataError unless `normalization` is known and fits a model of `channels`, with
    `mean` and `std` (`channels` finite values each, std > 0) exactly for ``dataset``."""
    if normalization not in NORMALIZATIONS:
        raise DataError(_unknown_normalization(normalization))
    if normalization != DATASET:
        if mean is not None or std is not None:
            raise DataError(f"normalization {normalization!r} takes no mean or std; only "
                            f"{DATASET!r} (the training split's statistics) does.")
    else:
        _check_statistics(mean, std, channels)
    if normalization in ("torch", "caffe") and channels != 3:
        raise DataError(
            f"normalization {normalization!r} standardizes the ImageNet RGB channels and "
            f"needs a model input of 3 channels, got {channels}."
        )


def _check_statistics(mean, std, channels: int) -> None:
    """DataError unless `mean` and `std` are `channels` finite numbers each, std > 0."""
    for name, values in (("mean", mean), ("std", std)):
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or isinstance(values, (str, bytes)) or len(numbers) != channels \
                or not all(math.isfinite(v) for v in numbers) \
                or name == "std" and min(numbers) <= 0:
            raise DataError(
                f"normalization {DATASET!r} needs {name} as {channels} finite per-channel "
                f"values{' above 0' if name == 'std' else ''} (the training split's, on the "
                f"[0, 1] scale), got {values!r}."
            )


def _legacy_config(config: Mapping, input_shape) -> dict:
    """The `unit` record meant by a run.json written before normalization modes."""
    if input_shape is None:
        raise DataError(
            f"The preprocessing record {dict(config)!r} has no input_shape; pass the "
            "model's input shape to read it."
        )
    known = {"scale": 255.0, "resize": RESIZE_METHOD}
    unexpected = {k: v for k, v in config.items() if k in known and v != known[k]}
    if unexpected or not set(config) <= {*known, "channels"}:
        raise DataError(
            f"The preprocessing record {dict(config)!r} is neither one written by "
            "preprocessing_config nor the former {'scale': 255.0, 'resize': 'bilinear', "
            "'channels': C}."
        )
    return preprocessing_config(input_shape)


# --------------------------------------------------------------------- channels, size


def _supported(source: int, target: int) -> bool:
    """Whether `CHANNEL_RULE` turns `source` channels into `target`."""
    without_alpha = source - 1 if source in (2, 4) else source
    return source == target or without_alpha == target or {without_alpha, target} == {1, 3}


def _convert(x: tf.Tensor, source: int, height, width, target: int) -> tf.Tensor:
    """Steps 2-4 for float images (N, h, w, source) with a known channel count."""
    # Fewer channels first makes the resize cheaper; more channels last, likewise.
    if target < source:
        return _resize(_adapt_channels(x, source, target), height, width)
    return _adapt_channels(_resize(x, height, width), source, target)


def _adapt_channels(x: tf.Tensor, source: int, target: int) -> tf.Tensor:
    """Change the channel count of float images (N, h, w, source) to `target`."""
    if not _supported(source, target):
        raise DataError(
            f"Cannot adapt images with {source} channels to a model input with {target} "
            "channels; supported: 1<->3, and 2->1 / 4->3 by dropping alpha."
        )
    if source == target:
        return x
    if source in (2, 4):  # grey+alpha or RGBA: alpha carries no class information
        x, source = x[..., : source - 1], source - 1
    if source == 1 and target == 3:
        return tf.tile(x, [1, 1, 1, 3])
    if source == 3 and target == 1:
        return tf.image.rgb_to_grayscale(x)
    return x


def _convert_any_channels(x: tf.Tensor, height, width, target: int) -> tf.Tensor:
    """`_convert` for a channel count known only at run time: one branch per count."""
    count = tf.shape(x)[-1]

    def branch(source: int):
        def convert():
            if not _supported(source, target):
                return _refuse(x, count, height, width, target)
            return _convert(tf.ensure_shape(x, [None, None, None, source]),
                            source, height, width, target)

        return convert

    def no_such_count():  # 0 or more than 4 channels
        return _refuse(x, count, height, width, target)

    branches = [branch(source) for source in range(1, _MAX_CHANNELS + 1)]
    converted = tf.switch_case(count - 1, branches, default=no_such_count)
    return tf.ensure_shape(converted, [x.shape[0], height, width, target])


def _refuse(x: tf.Tensor, count: tf.Tensor, height, width, target: int) -> tf.Tensor:
    """A run-time failure naming the channel counts (shaped like a converted batch)."""
    check = tf.debugging.Assert(False, [
        f"images must have 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels that "
        f"can become the model's {target} (1<->3, alpha dropped); got channels:", count,
    ])
    with tf.control_dependencies([check]):
        shape = tf.shape(x)
        return tf.zeros([shape[0], height or shape[1], width or shape[2], target])


def _resize(x: tf.Tensor, height: int | None, width: int | None) -> tf.Tensor:
    """Steps 3-4: (N, h, w, C) to (N, height, width, C); None keeps that side."""
    if height is None and width is None:
        return x
    known_h, known_w = x.shape[1], x.shape[2]
    if known_h is not None and known_w is not None:  # sizes known now: decide in Python
        size = (known_h if height is None else height, known_w if width is None else width)
        if size == (known_h, known_w):
            return x
        return _bilinear(x, size, antialias=size[0] < known_h or size[1] < known_w)
    shape = tf.shape(x)
    size = (shape[1] if height is None else height, shape[2] if width is None else width)
    same = tf.logical_and(tf.equal(shape[1], size[0]), tf.equal(shape[2], size[1]))
    shrinking = tf.logical_or(size[0] < shape[1], size[1] < shape[2])
    resized = tf.cond(
        same,
        lambda: x,
        lambda: tf.cond(
            shrinking,
            lambda: _bilinear(x, size, antialias=True),
            lambda: _bilinear(x, size, antialias=False),
        ),
    )
    return tf.ensure_shape(resized, [x.shape[0], height, width, x.shape[3]])


def _bilinear(x: tf.Tensor, size, *, antialias: bool) -> tf.Tensor:
    """`RESIZE_METHOD` resize, clipped: interpolation is convex, only rounding leaves [0, 1]."""
    resized = tf.image.resize(x, size, method=RESIZE_METHOD, antialias=antialias)
    return tf.clip_by_value(resized, 0.0, 1.0)
