"""Export a trained model for serving: a TF Serving SavedModel or a LiteRT flatbuffer.

`export(model_or_run, "saved_models/NAME/VERSION")` writes one *version directory* of the
layout TensorFlow Serving watches (a base path ``saved_models/NAME`` holding numbered
versions). With ``format="savedmodel"`` it holds:

- ``saved_model.pb``, ``variables/`` -- a SavedModel with two signatures:

  * ``serve``: the model itself, ``inputs`` float32 ``(None, H, W, C)`` in [0, 1] ->
    ``output_0`` float32 ``(None, K)`` probabilities (what ``keras.Model.export`` writes).
  * ``serving_default``: ``images`` uint8 ``(None, None, None, None)`` of any size and
    1-4 channels -> ``probabilities`` ``(N, K)`` float32, ``classes`` ``(N,)`` int64 and
    ``labels`` ``(N,)`` string, with the preprocessing of `preprocess_uint8` inside.

- ``assets/labels.txt`` -- the class names, one a line, in class-index order.
- ``metadata.json`` -- recipe, params, class names, input spec, training metrics,
  versions, a weights checksum (see `weights_checksum`), export time and format.

With ``format="litert"`` it holds ``model.tflite`` (the float ``serve`` function),
``labels.txt`` and ``metadata.json``; the flatbuffer is checked against the Keras model
before it is published.

Writing is atomic: everything goes to a hidden sibling ``.VERSION.tmp-XXXXXXXX`` that is
renamed to ``VERSION`` only when complete, so a server polling the base path never sees a
half-written version and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.errors import CnnBuilderError, RunError

__all__ = ["FORMATS", "export", "format_export_summary", "preprocess_uint8", "weights_checksum"]

FORMATS = ("savedmodel", "litert")
_FORMAT_ALIASES = {
    "savedmodel": "savedmodel", "saved_model": "savedmodel", "tf_saved_model": "savedmodel",
    "litert": "litert", "tflite": "litert",
}
MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
TFLITE_FILE = "model.tflite"
# The LiteRT flatbuffer must reproduce the Keras probabilities to this accuracy.
LITERT_TOLERANCE = 1e-4
# Size of the seeded random batch that check is made on (>1: exercises the dynamic batch).
_LITERT_CHECK_BATCH = 4
# Raw images may carry 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels.
_MAX_IMAGE_CHANNELS = 4
# ITU-R 601 luma weights, the ones tf.image.rgb_to_grayscale uses.
_RGB_TO_GREY = (0.2989, 0.5870, 0.1140)
# TF Serving parses version directory names as int64.
_MAX_VERSION = 2**63 - 1
_CHECKSUM_METHOD = (
    "sha256 over model.weights in order; for each weight the ASCII header "
    "'<dtype>:<dim0>x<dim1>...;' followed by its value as little-endian C-order bytes"
)


@dataclasses.dataclass
class _Source:
    """A model to export and what its training run recorded about it."""

    model: Any
    path: Path | None = None
    run: dict | None = None
    metrics: dict | None = None


# ------------------------------------------------------------------------------ public


def export(
    model_or_run,
    directory,
    *,
    format: str = "savedmodel",
    force: bool = False,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Export a classifier to the TF Serving version directory `directory`.

    Args:
        model_or_run: a `keras.Model`, a training run directory (holding ``model.keras``
            and optionally ``run.json`` / ``metrics.json``), or a ``.keras`` file (a
            ``run.json`` / ``metrics.json`` beside a file named ``model.keras`` is used).
        directory: ``BASE/NAME/VERSION`` with VERSION a positive integer, e.g.
            ``saved_models/digits/1``. An existing empty directory counts as free.
        format: ``"savedmodel"`` (default) or ``"litert"``.
        force: replace an existing version directory (atomically) instead of refusing.
        class_names: names of the K classes; default from ``run.json``, else "0".."K-1".

    Returns:
        The version directory written.

    Raises:
        RunError: bad version directory, existing version without `force`, a missing
            or unloadable model, a model that is not an (H, W, C) -> (K,) classifier.
        CnnBuilderError: unknown format, or a LiteRT file that disagrees with Keras.
    """
    fmt = _check_format(format)
    final = _check_version_directory(directory)
    if not force:
        _refuse_existing(final)  # fail before the slow part; checked again when publishing
    source = _load_source(model_or_run)
    input_shape, num_classes = _classifier_shape(source)
    names = _resolve_class_names(class_names, source, num_classes)
    preprocessing = _preprocessing(source)
    with _staged_version_directory(final, force=force) as staging:
        if fmt == "savedmodel":
            details = _write_saved_model(source.model, staging, names, input_shape, preprocessing)
        else:
            details = _write_litert(source.model, staging, names, input_shape)
        metadata = _metadata(source, fmt, names, input_shape, preprocessing, details)
        _write_json(staging / METADATA_FILE, metadata)
    return final


def preprocess_uint8(
    images,
    input_shape: Sequence[int],
    *,
    scale: float = 255.0,
    method: str = "bilinear",
    antialias: bool = True,
) -> tf.Tensor:
    """Turn raw uint8 images into model input: float32 (N, H, W, C) in [0, 1].

    `images` is a uint8 batch (N, h, w, c) or one image (h, w, c) of any size, with c of
    1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -- known statically or only at run
    time, as in a signature taking (None, None, None, None). Steps: cast to float32;
    drop alpha; adapt channels to C (grey -> C by tiling, RGB -> grey with
    `tf.image.rgb_to_grayscale`'s weights); divide by `scale`; resize to (H, W) with
    `tf.image.resize(method, antialias)` only when the size differs; clip to [0, 1].

    The defaults match `cnnbuilder.data.datasets.to_model_input`, the conversion the training
    pipeline applies (antialiasing only changes downscaling). Pure TF ops.
    """
    height, width, channels = _static_input_shape(input_shape)
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise CnnBuilderError(f"preprocess_uint8 expects uint8 images, got {images.dtype.name}.")
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    if images.shape.rank != 4:
        raise CnnBuilderError(
            f"preprocess_uint8 expects images of shape (N, H, W, C) or (H, W, C), "
            f"got shape {images.shape}."
        )
    x = _adapt_channels(tf.cast(images, tf.float32), channels) / scale
    x = _resize_if_needed(x, height, width, method=method, antialias=antialias)
    # Interpolation is a convex combination; clip only float rounding at the edges.
    x = tf.clip_by_value(x, 0.0, 1.0)
    return x[0] if single else x


def weights_checksum(model) -> str:
    """Hex sha256 of the model's weights, stable across saves and layer renames.

    Computed over `model.weights` in order: for each weight the ASCII header
    ``'<dtype>:<dim0>x<dim1>...;'`` then its value as little-endian C-order bytes. Names
    are left out on purpose, so the same numbers under other layer names (or a reloaded
    copy) give the same checksum while any changed value, shape or order does not.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        shape = "x".join(str(d) for d in value.shape)
        digest.update(f"{value.dtype.name}:{shape};".encode("ascii"))
        little_endian = value.astype(value.dtype.newbyteorder("<"), copy=False)
        digest.update(np.ascontiguousarray(little_endian).tobytes())
    return digest.hexdigest()


def format_export_summary(directory) -> str:
    """A few human-readable lines about an export written by `export` (for the CLI)."""
    directory = Path(directory)
    meta = _read_json(directory / METADATA_FILE, what="export metadata")
    if meta is None:
        raise RunError(f"{directory / METADATA_FILE} does not exist: not a cnnbuilder export.")
    shape = "x".join(str(d) for d in meta["input"]["shape"][1:])
    lines = [
        f"Exported {meta.get('recipe') or 'model'} as {meta['format']} to {directory}",
        f"  input {shape} float32 in [0, 1]; {len(meta['class_names'])} classes",
    ]
    accuracy = (meta.get("metrics") or {}).get("test_accuracy")
    if accuracy is not None:
        lines.append(f"  test accuracy {float(accuracy):.4f}")
    if meta["format"] == "savedmodel":
        lines.append("  signatures: serving_default (uint8 images), serve (float input)")
    else:
        lines.append(f"  LiteRT max abs diff vs Keras: {meta['litert']['max_abs_diff']:.2e}")
    return "\n".join(lines)


# ------------------------------------------------------------------ arguments, source


def _check_format(format: str) -> str:
    """The canonical format name, or a CnnBuilderError listing the choices."""
    fmt = _FORMAT_ALIASES.get(str(format).lower())
    if fmt is None:
        raise CnnBuilderError(
            f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}."
        )
    return fmt


def _check_version_directory(directory) -> Path:
    """`directory` as a Path whose last component is a TF Serving version number."""
    path = Path(directory)
    name = path.name
    if not re.fullmatch(r"[1-9][0-9]*", name) or int(name) > _MAX_VERSION:
        raise RunError(
            f"Export directory {path} must be a version directory named by a positive "
            f"integer without leading zeros, got {name!r}. TensorFlow Serving watches a "
            "base path holding one numbered sub-directory per model version, so export "
            f"to e.g. {path / '1'} or saved_models/NAME/1 and increase the number for "
            "each new version."
        )
    if path.parent.exists() and not path.parent.is_dir():
        raise RunError(
            f"The model base path {path.parent} is a file; expected a directory holding "
            "numbered version directories."
        )
    return path


def _is_occupied(path: Path) -> bool:
    """Whether publishing to `path` would overwrite something (an empty dir is free)."""
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())


def _refuse_existing(final: Path) -> None:
    """RunError if version directory `final` already holds something."""
    if _is_occupied(final):
        raise RunError(
            f"Version directory {final} already exists; exported versions are never "
            "overwritten. Export to a new version number (TF Serving serves the highest "
            "one), or pass force=True (--force) to replace it."
        )


def _load_source(model_or_run) -> _Source:
    """The model plus run.json / metrics.json from a model, run directory or .keras file."""
    import keras

    if isinstance(model_or_run, keras.Model):
        return _Source(model=model_or_run)
    if not isinstance(model_or_run, (str, os.PathLike)):
        raise CnnBuilderError(
            f"export() takes a keras.Model, a run directory or a .keras file path, got "
            f"{type(model_or_run).__name__}."
        )
    path = Path(model_or_run)
    if path.is_dir():
        model_file, sidecars = path / MODEL_FILE, path
        if not model_file.is_file():
            raise RunError(
                f"Run directory {path} has no {MODEL_FILE}; expected the directory written "
                "by `cnnbuilder train` (or `tune`'s best/), or a path to a .keras file."
            )
    elif path.is_file():
        if path.suffix != ".keras":
            raise RunError(
                f"{path} is not a .keras model file; expected a training run directory "
                "or a Keras 3 .keras file."
            )
        model_file = path
        # Only a file named as `train` writes it is known to belong to the run files beside it.
        sidecars = path.parent if path.name == MODEL_FILE else None
    else:
        raise RunError(
            f"{path} does not exist; expected a training run directory holding "
            f"{MODEL_FILE} or a path to a .keras file."
        )
    run = metrics = None
    if sidecars is not None:
        run = _read_json(sidecars / RUN_FILE, what="run description")
        metrics = _read_json(sidecars / METRICS_FILE, what="training metrics")
    return _Source(model=_load_keras_model(model_file), path=path, run=run, metrics=metrics)


def _load_keras_model(model_file: Path):
    """Load a .keras file safely; any failure becomes a RunError naming the file."""
    import keras

    # cnnbuilder is imported (this module is part of it), so any serializable custom
    # layer it registers is known to the loader; safe_mode still refuses Lambda code.
    try:
        return keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 -- corrupt zips, bad configs, Lambda layers...
        detail = " ".join(str(error).split())[:500]
        raise RunError(
            f"Cannot load the Keras model {model_file}: {type(error).__name__}: {detail}. "
            "Expected a Keras 3 .keras file written by model.save() (loaded with "
            "safe_mode=True); the file may be corrupt, truncated or from another format."
        ) from error


def _read_json(path: Path, *, what: str) -> dict | None:
    """The JSON object in `path`, None if the file is absent, RunError if unreadable."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"Cannot read the {what} {path}: {error}. Expected a JSON object.") from error
    if not isinstance(data, dict):
        raise RunError(f"The {what} {path} holds {type(data).__name__}; expected a JSON object.")
    return data


def _classifier_shape(source: _Source) -> tuple[tuple[int, int, int], int]:
    """((H, W, C), K) of a one-input image model with one (None, K) output."""
    model = source.model
    where = source.path or f"model {model.name!r}"
    inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    out_shape = tuple(outputs[0].shape) if len(outputs) == 1 else ()
    if not (
        len(in_shape) == 4 and all(isinstance(d, int) and d > 0 for d in in_shape[1:])
        and len(out_shape) == 2 and isinstance(out_shape[1], int) and out_shape[1] > 0
    ):
        raise RunError(
            f"Cannot export {where}: expected an image classifier with one input of fixed "
            f"shape (H, W, C) and one output of shape (K,), got inputs "
            f"{[tuple(t.shape) for t in inputs]} and outputs {[tuple(t.shape) for t in outputs]}."
        )
    return tuple(int(d) for d in in_shape[1:]), int(out_shape[1])


def _resolve_class_names(class_names, source: _Source, num_classes: int) -> list[str]:
    """Class names from the argument, else run.json, else "0".."K-1"; checked against K."""
    if class_names is not None:
        names, origin = class_names, "class_names argument"
    elif source.run and source.run.get("class_names") is not None:
        names, origin = source.run["class_names"], f"class_names of {source.path}/{RUN_FILE}"
    else:
        return [str(i) for i in range(num_classes)]
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise RunError(f"The {origin} must be a list of {num_classes} strings, got {names!r}.")
    names = [str(name) for name in names]
    if len(names) != num_classes:
        raise RunError(
            f"The {origin} lists {len(names)} names but the model has {num_classes} "
            "outputs; expected one name per class, in class-index order."
        )
    bad = [name for name in names if not name or "\n" in name or "\r" in name]
    if bad:
        raise RunError(
            f"The {origin} holds names that are empty or contain a line break: {bad!r}; "
            f"expected one line of text per class (they are stored one a line in {LABELS_FILE})."
        )
    return names


def _preprocessing(source: _Source) -> dict:
    """The uint8 -> model input conversion: run.json's preprocessing over the defaults."""
    recorded = (source.run or {}).get("preprocessing") or {}
    scale = recorded.get("scale", 255.0)
    method = recorded.get("resize", "bilinear")
    antialias = recorded.get("antialias", True)
    if not (isinstance(scale, (int, float)) and scale > 0 and isinstance(method, str)):
        raise RunError(
            f"The preprocessing in {source.path}/{RUN_FILE} is {recorded!r}; expected "
            "{'scale': a positive number, 'resize': a tf.image.resize method name}."
        )
    return {"scale": float(scale), "resize": method, "antialias": bool(antialias)}


# ----------------------------------------------------------------------- preprocessing


def _static_input_shape(input_shape) -> tuple[int, int, int]:
    """(H, W, C) as positive ints, or a CnnBuilderError."""
    try:
        height, width, channels = (int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise CnnBuilderError(
            f"input_shape must be (H, W, C) with positive integers, got {input_shape!r}."
        ) from None
    if min(height, width, channels) <= 0:
        raise CnnBuilderError(f"input_shape must hold positive integers, got {input_shape!r}.")
    return height, width, channels


def _channel_mixers(target: int) -> np.ndarray:
    """(4, 4, target) float32: [c - 1, :c] maps c raw channels to `target` channels.

    Every supported conversion -- drop alpha, tile grey, RGB -> grey -- is linear per
    pixel, so it is one matrix product; choosing the matrix by the run-time channel
    count avoids tf.cond branches whose shapes only one channel count can satisfy.
    """
    mixers = np.zeros((_MAX_IMAGE_CHANNELS, _MAX_IMAGE_CHANNELS, target), np.float32)
    for count in range(1, _MAX_IMAGE_CHANNELS + 1):
        colour = count >= 3  # 3: RGB, 4: RGBA; alpha (channel 2 or 4) keeps a zero row
        if colour and target == 3:
            mixers[count - 1, :3, :] = np.eye(3)
        elif colour:  # RGB -> grey, tiled to the target channel count
            mixers[count - 1, :3, :] = np.asarray(_RGB_TO_GREY, np.float32)[:, None]
        else:  # grey -> tiled
            mixers[count - 1, 0, :] = 1.0
    return mixers


def _adapt_channels(x: tf.Tensor, target: int) -> tf.Tensor:
    """Float images (N, h, w, 1..4) -> (N, h, w, target); asserts 1..4 at run time."""
    count = tf.shape(x)[-1]
    check = tf.debugging.Assert(
        tf.logical_and(count >= 1, count <= _MAX_IMAGE_CHANNELS),
        ["images must have 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels, got",
         count],
    )
    if x.shape[-1] == target and target in (1, 3):
        return x  # already grey / RGB: the mixer would be an identity
    with tf.control_dependencies([check]):
        mixer = tf.constant(_channel_mixers(target))[count - 1, :count]
    # einsum, not tensordot: it keeps the static batch/height/width where they are known.
    return tf.einsum("nhwc,ct->nhwt", x, mixer)


def _resize_if_needed(x, height: int, width: int, *, method: str, antialias: bool) -> tf.Tensor:
    """Resize (N, h, w, C) to (N, height, width, C) unless the size already matches."""
    channels = x.shape[-1]
    if x.shape[1] is not None and x.shape[2] is not None:  # known now: decide in Python
        if (x.shape[1], x.shape[2]) == (height, width):
            return x
        return tf.image.resize(x, (height, width), method=method, antialias=antialias)
    shape = tf.shape(x)
    same = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
    resized = tf.cond(
        same,
        lambda: x,
        lambda: tf.image.resize(x, (height, width), method=method, antialias=antialias),
    )
    return tf.ensure_shape(resized, [None, height, width, channels])


# ---------------------------------------------------------------------- atomic writing


@contextlib.contextmanager
def _staged_version_directory(final: Path, *, force: bool) -> Iterator[Path]:
    """Yield a fresh hidden sibling of `final`; publish it as `final` when the block ends.

    On any exception the staging directory is deleted and `final` is left as it was.
    """
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"Cannot create the model base path {parent}: {error}.") from error
    staging = _make_hidden_sibling(final, "tmp")
    try:
        yield staging
        _publish(staging, final, force=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _make_hidden_sibling(final: Path, kind: str) -> Path:
    """Create and return an empty `.VERSION.<kind>-XXXXXXXX` directory beside `final`.

    Hidden and non-numeric, so TF Serving's version scan ignores it; created with
    os.mkdir (not mkdtemp) so it gets the umask's permissions like any other directory.
    """
    while True:
        candidate = final.parent / f".{final.name}.{kind}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _publish(staging: Path, final: Path, *, force: bool) -> None:
    """Rename `staging` to `final`; with `force`, swap out what `final` held."""
    if not _is_occupied(final):
        if final.is_dir():
            final.rmdir()  # an empty placeholder directory: nothing to keep
        os.rename(staging, final)
        return
    if not force:
        _refuse_existing(final)
    retired = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.rename(final, retired)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(retired, final)  # put the previous version back
        raise
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired, ignore_errors=True)
    else:
        retired.unlink(missing_ok=True)


def _write_json(path: Path, data: Mapping) -> None:
    """Write `data` as indented UTF-8 JSON."""
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _write_labels(path: Path, class_names: Sequence[str]) -> None:
    """Class names one a line, in class-index order."""
    path.write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")


# -------------------------------------------------------------------------- savedmodel


def _serve_function(model, input_shape) -> tf.types.experimental.GenericFunction:
    """tf.function of the model itself: float32 (None, H, W, C) -> probabilities."""
    spec = tf.TensorSpec((None, *input_shape), tf.float32, name="inputs")

    def serve(inputs):
        return model(inputs, training=False)

    return tf.function(serve, input_signature=[spec], autograph=False)


def _serving_default_function(model, input_shape, class_names, preprocessing):
    """tf.function: raw uint8 images (None, None, None, None) -> probabilities/classes/labels."""
    labels = tf.constant(list(class_names), dtype=tf.string)
    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")

    def serving_default(images):
        x = preprocess_uint8(
            images,
            input_shape,
            scale=preprocessing["scale"],
            method=preprocessing["resize"],
            antialias=preprocessing["antialias"],
        )
        probabilities = tf.cast(model(x, training=False), tf.float32)
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "labels": tf.gather(labels, classes),
        }

    return tf.function(serving_default, input_signature=[spec], autograph=False)


def _captured_variables(*functions) -> list:
    """The tf.Variables the concrete `functions` read, deduplicated, in first-use order.

    These, not the keras.Variable wrappers of `model.variables`, must be tracked: a
    SavedModel tracking the wrappers reloads fine in TF, but the TFLite converter then
    cannot match the captured handles to saved values and leaves uninitialised
    VAR_HANDLE ops (NaN outputs). keras.export.ExportArchive tracks them the same way.
    """
    seen, variables = set(), []
    for function in functions:
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def _write_saved_model(model, path: Path, class_names, input_shape, preprocessing) -> dict:
    """Write the two-signature SavedModel (and assets/labels.txt) into `path`.

    A bare tf.Module holding the functions' variables and the two tf.functions is saved,
    not the Keras model object: the approach of keras.export.ExportArchive, but with
    public TF API only and room for the labels asset.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cnnbuilder-labels-"))
    try:
        _write_labels(scratch / LABELS_FILE, class_names)
        root = tf.Module()
        root.serve = _serve_function(model, input_shape)
        root.serving_default = _serving_default_function(
            model, input_shape, class_names, preprocessing
        )
        signatures = {
            "serve": root.serve.get_concrete_function(),
            "serving_default": root.serving_default.get_concrete_function(),
        }
        root.model_variables = _captured_variables(*signatures.values())
        # An Asset is copied into assets/ by the saver and revived as a path on load.
        root.labels_file = tf.saved_model.Asset(str(scratch / LABELS_FILE))
        tf.saved_model.save(root, str(path), signatures=signatures)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    height, width, channels = input_shape
    return {
        "files": ["saved_model.pb", "variables/", f"assets/{LABELS_FILE}", METADATA_FILE],
        "signatures": {
            "serve": {
                "inputs": {"inputs": {"dtype": "float32", "shape": [None, height, width, channels],
                                      "range": [0.0, 1.0]}},
                "outputs": {"output_0": {"dtype": "float32", "shape": [None, len(class_names)],
                                         "meaning": "class probabilities"}},
            },
            "serving_default": {
                "inputs": {"images": {"dtype": "uint8", "shape": [None, None, None, None],
                                      "channels": "1 grey, 2 grey+alpha, 3 RGB, 4 RGBA"}},
                "outputs": {
                    "probabilities": {"dtype": "float32", "shape": [None, len(class_names)]},
                    "classes": {"dtype": "int64", "shape": [None], "meaning": "top class index"},
                    "labels": {"dtype": "string", "shape": [None], "meaning": "top class name"},
                },
            },
        },
    }


# ------------------------------------------------------------------------------ litert


def _write_litert(model, path: Path, class_names, input_shape) -> dict:
    """Convert the `serve` function to model.tflite in `path` and check it against Keras."""
    root = tf.Module()
    root.serve = _serve_function(model, input_shape)
    serve = root.serve.get_concrete_function()
    root.model_variables = _captured_variables(serve)  # see _captured_variables: why
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], root)
    # Builtin ops only: a Flex (SELECT_TF_OPS) model would need the TF runtime on device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 -- converter errors are many and unexported
        raise CnnBuilderError(
            f"LiteRT conversion of model {model.name!r} failed: "
            f"{' '.join(str(error).split())[:500]}. Expected a model made of TFLite builtin "
            "ops; export it as format='savedmodel' instead."
        ) from error
    (path / TFLITE_FILE).write_bytes(flatbuffer)
    _write_labels(path / LABELS_FILE, class_names)
    runtime, diff = _check_litert(model, path / TFLITE_FILE, input_shape)
    if not diff <= LITERT_TOLERANCE:
        raise CnnBuilderError(
            f"The LiteRT conversion of model {model.name!r} disagrees with the Keras model: "
            f"max abs difference of probabilities {diff:.3g} > {LITERT_TOLERANCE:g} on a random "
            "batch. Nothing was written; export it as format='savedmodel' instead."
        )
    return {
        "files": [TFLITE_FILE, LABELS_FILE, METADATA_FILE],
        "litert": {
            "file": TFLITE_FILE,
            "input": {"dtype": "float32", "shape": [None, *input_shape], "range": [0.0, 1.0]},
            "output": {"dtype": "float32", "shape": [None, len(class_names)]},
            "interpreter": runtime,
            "check_batch": _LITERT_CHECK_BATCH,
            "max_abs_diff": diff,
            "tolerance": LITERT_TOLERANCE,
        },
    }



def _litert_interpreter(model_path: Path):
    """(interpreter, runtime name): ai_edge_litert's, else TensorFlow's bundled one."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(model_path)), "ai_edge_litert"
    except ImportError:
        return tf.lite.Interpreter(model_path=str(model_path)), "tf.lite"


def _run_litert(model_path: Path, batch: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities of the .tflite model on `batch` and the runtime that computed them."""
    interpreter, runtime = _litert_interpreter(model_path)
    (input_detail,) = interpreter.get_input_details()
    # The flatbuffer keeps the dynamic batch (shape_signature -1); size it to this batch.
    interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], batch)
    interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    return np.array(interpreter.get_tensor(output_detail["index"])), runtime


def _check_litert(model, model_path: Path, input_shape) -> tuple[str, float]:
    """(runtime, max abs difference) between LiteRT and Keras on a seeded random batch."""
    batch = np.random.default_rng(0).random(
        (_LITERT_CHECK_BATCH, *input_shape), dtype=np.float32
    )
    litert_out, runtime = _run_litert(model_path, batch)
    keras_out = np.asarray(model(batch, training=False))
    return runtime, float(np.max(np.abs(litert_out - keras_out)))


# ---------------------------------------------------------------------------- metadata


def _versions() -> dict:
    """Versions of cnnbuilder, Keras, TensorFlow and Python."""
    import keras

    import cnnbuilder

    version = getattr(cnnbuilder, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version("cnnbuilder")
        except importlib.metadata.PackageNotFoundError:
            version = None
    return {
        "cnnbuilder": version,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
    }


def _metadata(source: _Source, fmt: str, class_names, input_shape, preprocessing, details) -> dict:
    """The metadata.json document of one export."""
    run = source.run or {}
    metadata = {
        "format": fmt,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": None if source.path is None else str(source.path),
        "model_name": source.model.name,
        "recipe": run.get("recipe"),
        "params": run.get("params"),
        "dataset": run.get("dataset"),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "input": {"shape": [None, *input_shape], "dtype": "float32", "range": [0.0, 1.0]},
        "preprocessing": preprocessing,
        "metrics": source.metrics,
        "versions": _versions(),
        "weights_sha256": weights_checksum(source.model),
        "weights_checksum_method": _CHECKSUM_METHOD,
        "num_weights": len(source.model.weights),
    }
    metadata.update(details)
    return metadata
