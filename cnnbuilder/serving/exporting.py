"""Export a trained model for serving: a TF Serving SavedModel or a LiteRT flatbuffer.

`export(model_or_run, "saved_models/NAME/VERSION")` writes one *version directory* of the
layout TensorFlow Serving watches (a base path ``saved_models/NAME`` holding numbered
versions). With ``format="savedmodel"`` it holds a SavedModel with the ``serve`` and
``serving_default`` signatures (`serving.saved_model`) and ``assets/labels.txt``; with
``format="litert"``, ``model.tflite`` checked against Keras (`serving.litert`) and
``labels.txt``. Both hold ``metadata.json`` (`serving.metadata`), whose
``preprocessing`` is the training run's record (`cnnbuilder.data.preprocessing_config`).

The version directory is written by the run-directory policy of
`cnnbuilder.training.rundir`: staged in a hidden sibling and renamed into place when
complete, so a server polling the base path never sees a half-written version and a
failure leaves nothing behind. An existing version is never overwritten without `force`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from cnnbuilder.errors import ExportError, RunError
from cnnbuilder.serving.litert import write_litert
from cnnbuilder.serving.metadata import METADATA, export_metadata, weights_checksum
from cnnbuilder.serving.saved_model import write_saved_model
from cnnbuilder.serving.source import (
    classifier_shape,
    load_source,
    recorded_preprocessing,
    resolve_class_names,
)
from cnnbuilder.training import rundir

__all__ = ["FORMATS", "export", "format_export_summary", "weights_checksum"]

FORMATS = ("savedmodel", "litert")
_FORMAT_ALIASES = {
    "savedmodel": "savedmodel", "saved_model": "savedmodel", "tf_saved_model": "savedmodel",
    "litert": "litert", "tflite": "litert",
}
# TF Serving parses version directory names as int64.
_MAX_VERSION = 2**63 - 1


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
            or unloadable model, a model that is not an (H, W, C) -> (K,) classifier, a
            malformed run.json.
        ExportError: unknown format, or a LiteRT file that disagrees with Keras.
    """
    fmt = _check_format(format)
    final = _check_version_directory(directory)
    if not force:
        _refuse_existing(final)  # fail before the slow part; checked again when publishing
    source = load_source(model_or_run)
    input_shape, num_classes = classifier_shape(source)
    names = resolve_class_names(class_names, source, num_classes)
    preprocessing = recorded_preprocessing(source, input_shape)
    write = write_saved_model if fmt == "savedmodel" else write_litert
    with rundir.staged_directory(final, replace=force, refuse=_refuse_existing) as staging:
        details = write(source.model, staging, names, input_shape, preprocessing)
        metadata = export_metadata(source, fmt, names, input_shape, preprocessing, details)
        rundir.atomic_write_json(staging / METADATA, metadata)
    return final


def format_export_summary(directory) -> str:
    """A few human-readable lines about an export written by `export` (for the CLI)."""
    directory = Path(directory)
    meta = rundir.read_json(directory / METADATA, what="export metadata")
    if meta is None:
        raise RunError(f"{directory / METADATA} does not exist: not a cnnbuilder export.")
    shape = "x".join(str(d) for d in meta["input"]["shape"][1:])
    low, high = meta["input"]["range"]
    # An export written before normalization modes records none: it is unit.
    normalization = (meta.get("preprocessing") or {}).get("normalization", "unit")
    lines = [
        f"Exported {meta.get('recipe') or 'model'} as {meta['format']} to {directory}",
        f"  input {shape} float32 in [{low:g}, {high:g}] ({normalization} normalization); "
        f"{len(meta['class_names'])} classes",
    ]
    accuracy = (meta.get("metrics") or {}).get("test_accuracy")
    if accuracy is not None:
        lines.append(f"  test accuracy {float(accuracy):.4f}")
    if meta["format"] == "savedmodel":
        lines.append("  signatures: serving_default (uint8 images), serve (float input)")
    else:
        lines.append(f"  LiteRT max abs diff vs Keras: {meta['litert']['max_abs_diff']:.2e}")
    return "\n".join(lines)


def _check_format(format: str) -> str:
    """The canonical format name, or an ExportError listing the choices."""
    fmt = _FORMAT_ALIASES.get(str(format).lower())
    if fmt is None:
        raise ExportError(
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


def _refuse_existing(final: Path) -> None:
    """RunError if version directory `final` already holds something."""
    if rundir.is_occupied(final):
        raise RunError(
            f"Version directory {final} already exists; exported versions are never "
            "overwritten. Export to a new version number (TF Serving serves the highest "
            "one), or pass force=True (--force) to replace it."
        )
