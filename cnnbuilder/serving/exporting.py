"""Export a trained model for serving: a TF Serving SavedModel, a LiteRT flatbuffer (float
or quantized) or an ONNX file.

`export(model_or_run, "saved_models/NAME/VERSION")` writes one *version directory* of the
layout TensorFlow Serving (and, for ONNX, Triton's model repository) watches: a base path
``saved_models/NAME`` holding numbered versions. With ``format="savedmodel"`` it holds a
SavedModel with the ``serve`` and ``serving_default`` signatures (`serving.saved_model`)
and ``assets/labels.txt``; with ``format="litert"``, ``model.tflite`` (`serving.litert`,
``quantize=`` `serving.quantization`); with ``format="onnx"``, ``model.onnx``
(`serving.onnx_export`); the last two beside ``labels.txt``. An output naming a file
(``exports/digits/model.onnx``, ``....tflite``) writes that file, and the format follows
from its suffix; its directory is then the export's and holds nothing else. Every export
holds ``metadata.json`` (`serving.metadata`), whose ``preprocessing`` is the training
run's record (`cnnbuilder.data.preprocessing_config`), and ``README.md``, its model card
(`serving.model_card`). A segmentation model (run.json's ``task``, or a 4-D output) is
exported with per-pixel outputs at the input image's size (`serving.segmentation`).

Every file is checked before it is published: LiteRT and ONNX against Keras, quantized
LiteRT by its accuracy on the run's test split. The directory is written by the
run-directory policy of `cnnbuilder.runs`: staged in a hidden sibling and
renamed into place when complete, so a server polling the base path never sees a
half-written version and a failure (a check that fails included) leaves nothing behind.
An existing export is never overwritten without `force`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from cnnbuilder.errors import ExportError, RunError
from cnnbuilder.serving.litert import TFLITE, write_litert
from cnnbuilder.serving.metadata import METADATA, export_metadata, weights_checksum
from cnnbuilder.serving.model_card import MODEL_CARD, model_card
from cnnbuilder.serving.onnx_export import ONNX, write_onnx
from cnnbuilder.serving.quantization import QUANTIZATIONS
from cnnbuilder.serving.run_data import RunData
from cnnbuilder.serving.saved_model import write_saved_model
from cnnbuilder.serving.segmentation import (
    SEGMENTATION,
    check_segmentation_preprocessing,
    export_task,
    segmentation_details,
    segmentation_shape,
)
from cnnbuilder.serving.source import (
    classifier_shape,
    load_source,
    recorded_preprocessing,
    resolve_class_names,
)
from cnnbuilder import runs

__all__ = ["FORMATS", "QUANTIZATIONS", "export", "format_export_summary", "weights_checksum"]

FORMATS = ("savedmodel", "litert", "onnx")
_FORMAT_ALIASES = {
    "savedmodel": "savedmodel", "saved_model": "savedmodel", "tf_saved_model": "savedmodel",
    "litert": "litert", "tflite": "litert", "onnx": "onnx",
}
# An output with one of these suffixes is the model file itself.
_FILE_SUFFIXES = {".tflite": "litert", ".onnx": "onnx"}
_MODEL_FILES = {"litert": TFLITE, "onnx": ONNX}
# TF Serving parses version directory names as int64.
_MAX_VERSION = 2**63 - 1


def export(
    model_or_run,
    directory,
    *,
    format: str | None = None,
    quantize: str | None = None,
    max_accuracy_drop: float = 2.0,
    force: bool = False,
    class_names: Sequence[str] | None = None,
    dataset=None,
    data_dir=None,
    allow_unfinished: bool = False,
) -> Path:
    """Export a classifier or a segmentation model (`serving.segmentation`) to the version
    directory (or model file) `directory`.

    Args:
        model_or_run: a `keras.Model`, a training run directory (holding ``model.keras``
            and optionally ``run.json`` / ``metrics.json``), or a ``.keras`` file (a
            ``run.json`` / ``metrics.json`` beside a file named ``model.keras`` is used).
        directory: ``BASE/NAME/VERSION`` with VERSION a positive integer, e.g.
            ``saved_models/digits/1`` (an existing empty directory counts as free); or,
            for LiteRT and ONNX, a file path ending in ``.tflite`` / ``.onnx`` whose
            directory holds the export alone.
        format: ``"savedmodel"``, ``"litert"`` or ``"onnx"``; default: from the suffix of
            a file `directory`, else ``"savedmodel"``.
        quantize: LiteRT only: ``"dynamic"``, ``"float16"`` or ``"int8"``
            (`serving.quantization`); needs the run's data.
        max_accuracy_drop: percentage points of test accuracy a quantized file may lose
            against the Keras model before the export fails.
        force: replace an existing export (atomically) instead of refusing.
        class_names: names of the K classes; default from ``run.json``, else "0".."K-1".
        dataset: the data to check and calibrate on (a `load_dataset` spec or a loaded
            `Dataset`); default: the dataset ``run.json`` names.
        data_dir: TensorFlow Datasets' data directory, to reload a ``tfds:`` dataset.
        allow_unfinished: export the best epoch so far of a run that has not finished
            (no metrics.json); refused otherwise. Its metadata and model card say so.

    Returns:
        The version directory written, or the model file for a file `directory`.

    Raises:
        RunError: bad output path, existing export without `force`, a missing or
            unloadable model, a model that is not an (H, W, C) -> (K,) classifier nor an
            (H, W, C) -> (h, w, K) segmentation model (`serving.segmentation`), a
            malformed run.json, an unfinished run without `allow_unfinished`.
        ExportError: unknown format or quantization, a quantization the format cannot
            do (or any, of a segmentation model), or a file that fails its check.
    """
    fmt = _check_format(format, directory)
    quantize = _check_quantize(quantize, fmt, max_accuracy_drop)
    final, filename = _check_output(directory, fmt)
    # One export of a version at a time: a second one refuses at once, naming the first
    # (a hidden, non-numeric file beside the version, which TF Serving ignores).
    with runs.exclusive(final.parent / f".{final.name}{runs.LOCK}", what="export",
                          transient=True):
        return _export(model_or_run, fmt, quantize, final, filename, max_accuracy_drop=max_accuracy_drop,
                       force=force, class_names=class_names, dataset=dataset, data_dir=data_dir,
                       allow_unfinished=allow_unfinished)


def _export(model_or_run, fmt, quantize, final: Path, filename, *, max_accuracy_drop, force,
            class_names, dataset, data_dir, allow_unfinished) -> Path:
    """`export` once its arguments are checked and the version is held."""
    refuse = _refuse_existing if filename is None else _refuse_foreign
    # Fail before the slow part; checked again when publishing. A file export's directory
    # is replaced with `force` only when it holds an earlier export.
    if filename is not None:
        _refuse_foreign(final, force=force)
    elif not force:
        _refuse_existing(final)
    source = load_source(model_or_run)
    unfinished = _unfinished(source, allow_unfinished)
    task = export_task(source, quantize)  # a segmentation model: per-pixel classes
    input_shape, num_classes = (segmentation_shape if task == SEGMENTATION else classifier_shape)(source)
    names = resolve_class_names(class_names, source, num_classes)
    preprocessing = recorded_preprocessing(source, input_shape)
    spec = dataset if dataset is not None else (source.run or {}).get("dataset")
    run_data = RunData(spec, preprocessing, data_dir=data_dir,
                       options=None if dataset is not None else (source.run or {}).get("data_options"))
    options = {"task": task} if fmt == "savedmodel" else {}
    if task == SEGMENTATION:  # the test split's batches are (images, masks, weights)
        check_segmentation_preprocessing(preprocessing)
        run_data = RunData(None, preprocessing)
    if fmt == "litert":
        options = dict(quantize=quantize, run_data=run_data, max_accuracy_drop=max_accuracy_drop,
                       filename=filename or TFLITE)
    elif fmt == "onnx":
        options = dict(run_data=run_data, filename=filename or ONNX)
    write = {"savedmodel": write_saved_model, "litert": write_litert, "onnx": write_onnx}[fmt]
    with runs.staged_directory(final, replace=force, refuse=refuse) as staging:
        details = write(source.model, staging, names, input_shape, preprocessing, **options)
        if task == SEGMENTATION:
            details = segmentation_details(details, source.model, num_classes)
        metadata = export_metadata(source, fmt, names, input_shape, preprocessing, details)
        metadata["task"] = task
        if unfinished:
            metadata["unfinished"] = unfinished
        metadata["files"] = [*metadata.get("files", []), MODEL_CARD]
        runs.atomic_write_json(staging / METADATA, metadata)
        runs.atomic_write_text(staging / MODEL_CARD, model_card(
            metadata, recipe=_recipe(metadata.get("recipe")), model=source.model))
    return final if filename is None else final / filename


def _unfinished(source, allowed: bool) -> dict | None:
    """What an export of an unfinished run records (``{"epochs_done": N}``); None for a
    finished run or a model without one. A RunError unless `allowed`."""
    if source.directory is None or source.metrics is not None \
            or not (source.directory / runs.STATE).is_file():
        return None  # no run, a finished one, or run files that `train` did not write
    done = runs.epochs_done(source.directory)
    if not allowed:
        raise RunError(
            f"{source.directory} holds an unfinished run ({done} epoch(s) finished, no "
            f"{runs.METRICS}): its {runs.MODEL} is the best epoch so far, never evaluated on "
            "the test split. Finish the run (rerun its train command), or pass "
            "--allow-unfinished (allow_unfinished=True) to export it as it is; its model card "
            "then says so.")
    return {"epochs_done": done}


def format_export_summary(directory) -> str:
    """A few human-readable lines about an export written by `export` (for the CLI)."""
    directory = shown = Path(directory)
    if directory.is_file():
        directory = directory.parent
    meta = runs.read_json(directory / METADATA, what="export metadata")
    if meta is None:
        raise RunError(f"{directory / METADATA} does not exist: not a cnnbuilder export.")
    shape = "x".join(str(d) for d in meta["input"]["shape"][1:])
    low, high = meta["input"]["range"]
    # An export written before normalization modes records none: it is unit.
    normalization = (meta.get("preprocessing") or {}).get("normalization", "unit")
    lines = [
        f"Exported {meta.get('recipe') or 'model'} as {meta['format']} to {shown}",
        f"  input {shape} float32 in [{low:g}, {high:g}] ({normalization} normalization); "
        f"{len(meta['class_names'])} classes",
    ]
    accuracy = (meta.get("metrics") or {}).get("test_accuracy")
    mean_iou = (meta.get("metrics") or {}).get("test_mean_iou")
    if accuracy is not None:  # a segmentation run's is its pixel accuracy
        lines.append(f"  test {'pixel ' if mean_iou is not None else ''}accuracy {float(accuracy):.4f}")
    if mean_iou is not None:
        lines.append(f"  test mean IoU {float(mean_iou):.4f}")
    if meta["format"] == "savedmodel" and meta.get("task") == SEGMENTATION:
        lines.append("  signatures: serving_default (uint8 images -> class map at their size), "
                     "serve (float input)")
    elif meta["format"] == "savedmodel":
        lines.append("  signatures: serving_default (uint8 images), serve (float input)")
    elif meta["format"] == "onnx":
        check = meta["onnx"]["check"]
        lines.append(f"  ONNX Runtime max abs diff vs Keras: {check['max_abs_diff']:.2e} "
                     f"on {check['images']} images")
    else:
        quantization = meta["litert"].get("quantization")
        if quantization:
            accuracy = quantization["accuracy"]
            lines.append(f"  {quantization['mode']} quantized: test accuracy "
                         f"{accuracy['exported']:.4f} (Keras {accuracy['keras']:.4f}, "
                         f"drop {accuracy['drop_points']:.2f} points)")
        else:
            lines.append(f"  LiteRT max abs diff vs Keras: {meta['litert']['max_abs_diff']:.2e}")
    lines.append(f"  model card: {directory / MODEL_CARD}")
    return "\n".join(lines)


def _check_format(format: str | None, output) -> str:
    """The canonical format name (from `output`'s suffix when None), or an ExportError."""
    implied = _FILE_SUFFIXES.get(Path(output).suffix.lower())
    if format is None:
        return implied or "savedmodel"
    fmt = _FORMAT_ALIASES.get(str(format).lower())
    if fmt is None:
        raise ExportError(
            f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}."
        )
    if implied is not None and implied != fmt:
        raise ExportError(
            f"The output {output} names a {Path(output).suffix} file, which holds the "
            f"{implied} format, but the format asked for is {fmt}; drop --format or name "
            f"the file {Path(output).stem}{_suffix(fmt)}."
        )
    return fmt


def _suffix(fmt: str) -> str:
    return next((s for s, f in _FILE_SUFFIXES.items() if f == fmt), "/ (a version directory)")


def _check_quantize(quantize: str | None, fmt: str, max_accuracy_drop) -> str | None:
    """The quantization mode, checked against the format; ExportError otherwise."""
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)) \
            or not 0 <= max_accuracy_drop <= 100:
        raise ExportError(
            f"max_accuracy_drop is in percentage points, from 0 to 100; got {max_accuracy_drop!r}."
        )
    if quantize is None:
        return None
    mode = str(quantize).lower()
    if mode not in QUANTIZATIONS:
        raise ExportError(
            f"Unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZATIONS)} "
            "(LiteRT post-training quantization)."
        )
    if fmt != "litert":
        raise ExportError(
            f"The {fmt} format cannot be quantized by cnnbuilder (--quantize {mode}): "
            "quantization is LiteRT's (--format litert --quantize dynamic|float16|int8)."
        )
    return mode


def _check_output(output, fmt: str) -> tuple[Path, str | None]:
    """(export directory, model file name or None): a file output or a version directory."""
    path = Path(output)
    if path.suffix.lower() in _FILE_SUFFIXES:
        directory = path.parent.absolute()
        if directory.exists() and not directory.is_dir():
            raise RunError(f"The directory {path.parent} of the output {path} is a file.")
        return directory, path.name
    return _check_version_directory(path), None


def _recipe(name):
    """The run's recipe for the model card, or None when it cannot be loaded."""
    if not name:
        return None
    from cnnbuilder.zoo import load_recipe

    try:
        return load_recipe(name)
    except Exception:  # noqa: BLE001 -- a user's recipe file that moved: the card does without
        return None


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


def _refuse_foreign(final: Path, *, force: bool = False) -> None:
    """RunError if the directory of a file export holds anything: the export owns it.

    Unlike a version directory it is not replaced with `force` unless it holds an earlier
    export (its metadata.json): a user's directory of other files is never deleted.
    """
    if not runs.is_occupied(final):
        return
    earlier = (final / METADATA).is_file()
    if earlier and force:
        return
    raise RunError(
        f"The directory {final} already holds "
        + ("an export; pass force=True (--force) to replace it, or write the file into "
           "another directory." if earlier else
           "other files. An export fills a directory of its own (the model file, "
           "labels.txt, metadata.json, README.md): choose a new one, e.g. "
           f"{final / 'NAME' / 'model.onnx'}.")
    )


def _refuse_existing(final: Path) -> None:
    """RunError if version directory `final` already holds something."""
    if runs.is_occupied(final):
        raise RunError(
            f"Version directory {final} already exists; exported versions are never "
            "overwritten. Export to a new version number (TF Serving serves the highest "
            "one), or pass force=True (--force) to replace it."
        )
