"""Classify image files with any export written by `cnnbuilder.export`.

`predict(export, ["a.png", "b.jpg"])` reads each image as it is stored (uint8, any size,
grey / grey+alpha / RGB / RGBA) and returns the same JSON for every format:

- a SavedModel directory (or its base path, whose highest version is used): the images
  go to its ``serving_default`` signature, which resizes and converts them exactly as the
  model's training pipeline did (the SavedModel is self-contained);
- a ``.tflite`` or ``.onnx`` file (or the version directory holding ``model.tflite`` /
  ``model.onnx``): the images are converted by `cnnbuilder.data.preprocess_from_config`
  with the ``preprocessing`` record of the ``metadata.json`` beside the file, the same
  function, then run by the LiteRT interpreter or ONNX Runtime (`serving.runtimes`).

A segmentation export (metadata.json's ``task``, else 4-D probabilities) gives each
image's class areas instead of ranked labels, and with ``output=MASK_DIR`` writes a
palette PNG mask and a JSON of areas per image (`serving.segmentation`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnbuilder.errors import CnnBuilderError, DataError, RunError
from cnnbuilder.serving.foreign import check_saved_model
from cnnbuilder.serving.images import read_image, run_by_shape
from cnnbuilder.serving.metadata import LABELS, LABELS_ASSET, METADATA
from cnnbuilder.serving.runtimes import FileModel, resolve_export
from cnnbuilder.serving.segmentation import (
    check_mask_names,
    export_is_segmentation,
    file_class_maps,
    format_areas,
    predict_segmentation,
)
from cnnbuilder.runs import read_json

# The classifiers of ImageNet-1k weights (keras.applications, torchvision, timm).
IMAGENET_CLASSES = 1000

__all__ = ["format_predictions", "predict", "read_image", "resolve_saved_model_dir"]

SIGNATURE = "serving_default"
# Images of one size go through the model together, at most this many at a time.
_BATCH_SIZE = 32


def predict(export_path, image_paths: Sequence, *, top_k: int = 5,
            errors: str = "raise", trust: bool = False, output=None) -> list[dict]:
    """Top-k class predictions of the exported model for each image file.

    Args:
        export_path: a SavedModel version directory written by `cnnbuilder.export`
            (``saved_models/NAME/VERSION``) or its base path ``saved_models/NAME`` (the
            highest numbered version is used, as TF Serving does); a ``.tflite`` or
            ``.onnx`` file written by it, or the directory holding one.
        image_paths: PNG / JPEG (or anything Pillow reads) files of any size and mode.
        top_k: how many classes to report per image (capped at the number of classes).
        errors: ``"raise"``: an unreadable image is a DataError before anything is
            predicted; ``"report"``: its entry is ``{"image": path, "error": message}``
            and the other images are still predicted (the CLI's choice).
        trust: run a SavedModel that `cnnbuilder export` did not write as it is (no
            matching ``saved_model_sha256`` in its metadata.json). A SavedModel is a
            program, like a pickle: its graph may read and write files; only `.keras`
            loading is sandboxed. Its input and outputs are checked either way.
        output: segmentation exports only: a directory to write ``STEM.png`` (the class
            map, a palette PNG whose pixel values are class indices) and ``STEM.json``
            (its class areas) into for each image.

    Returns:
        ``[{"image": path, "predictions": [{"label": str, "probability": float}, ...]}]``
        in the order of `image_paths`, each list sorted by decreasing probability. For a
        segmentation export: ``[{"image": path, "size": [H, W], "areas": {name:
        {"pixels": n, "fraction": f}}}]``, plus ``"mask"`` and ``"areas_file"`` (the
        files written) with `output`; `top_k` does not apply.

    Raises:
        RunError: the path is missing or none of the three formats, a SavedModel has no
            ``serving_default`` signature taking uint8 images, or a model file has no
            metadata.json beside it.
        DataError: an image is missing or unreadable.
        CnnBuilderError: `top_k` is not a positive integer; `output` given for a
            classifier, naming a file, or two images sharing a file stem.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise CnnBuilderError(f"top_k must be a positive integer, got {top_k!r}.")
    if errors not in ("raise", "report"):
        raise CnnBuilderError(f"errors must be 'raise' or 'report', got {errors!r}.")
    if not isinstance(trust, bool):
        raise CnnBuilderError(f"trust must be True or False, got {trust!r}.")
    kind, path = resolve_export(export_path, saved_model_dir=resolve_saved_model_dir)
    if output is not None:
        if Path(output).exists() and not Path(output).is_dir():
            raise CnnBuilderError(f"The mask directory {output} is a file; expected a directory "
                                  "(created when missing) for the mask PNGs.")
        check_mask_names(image_paths, output)
    if kind == "savedmodel":  # before an image is read or anything of it runs
        check_saved_model(path, trust=trust)
    # Read every image before loading the model: a typo in a path fails fast.
    read = [_read_or_report(p, errors) for p in image_paths]
    failed = {index: message for index, (_, message) in enumerate(read) if message}
    good_paths = [p for index, p in enumerate(image_paths) if index not in failed]
    images = [image for image, message in read if not message]
    results = _predict_images(kind, path, good_paths, images, top_k, output) if images else []
    ranked = iter(results)
    return [{"image": str(p), "error": failed[index]} if index in failed else next(ranked)
            for index, p in enumerate(image_paths)]


def _read_or_report(path, errors: str) -> tuple:
    """(image, None), or (None, message) for an unreadable image when reporting."""
    try:
        return read_image(path), None
    except DataError as error:
        if errors == "raise":
            raise
        return None, str(error)


def _predict_images(kind, path, image_paths, images, top_k, output=None) -> list[dict]:
    """The ranked predictions (a segmentation model: the class areas) of readable images
    through the export at `path`."""
    if kind == "savedmodel":
        # `loaded` owns the variables: it must outlive every call of the signature.
        loaded, signature, input_name = _load_signature(path)
        spec = signature.structured_outputs.get("probabilities")
        if spec is not None and export_is_segmentation(path, spec.shape.rank):
            names = _class_names(path, LABELS_ASSET, int(spec.shape[-1]))
            return predict_segmentation(
                lambda batch: signature(**{input_name: batch})["classes"].numpy(),
                image_paths, images, names, output)
        _refuse_output(output, path)
        probabilities = _run_grouped(
            lambda batch: signature(**{input_name: batch})["probabilities"].numpy(), images)
        del loaded
        class_names = _class_names(path, LABELS_ASSET, probabilities.shape[1])
    else:
        model = FileModel(kind, path)
        if export_is_segmentation(path.parent, len(model.io_shapes[1])):
            names = _class_names(path.parent, LABELS, int(model.io_shapes[1][-1]))
            return predict_segmentation(file_class_maps(model.predict_images), image_paths,
                                        images, names, output)
        _refuse_output(output, path)
        probabilities = _run_grouped(model.predict_images, images)
        class_names = _class_names(path.parent, LABELS, probabilities.shape[1])
    return [
        {"image": str(p), "predictions": _top_k(row, class_names, top_k)}
        for p, row in zip(image_paths, probabilities)
    ]


def _refuse_output(output, path) -> None:
    """A CnnBuilderError when masks were asked of a classifier's export."""
    if output is not None:
        raise CnnBuilderError(
            f"--output {output} writes the masks of a segmentation model, but {path} is an "
            "image classifier (metadata.json's task, one class per image); leave --output out.")


def format_predictions(results: Sequence[dict]) -> str:
    """Human-readable text of `predict`'s results: each image, then its ranked labels,
    or its class areas (a segmentation model), or why it could not be read."""
    blocks = []
    for result in results:
        if "error" in result:
            blocks.append(f"{result['image']}\n  not predicted: {result['error']}")
            continue
        if "areas" in result:
            blocks.append(format_areas(result))
            continue
        predictions = result["predictions"]
        width = max((len(p["label"]) for p in predictions), default=0)
        lines = [str(result["image"])]
        lines += [
            f"  {rank}. {p['label']:<{width}}  {100.0 * p['probability']:6.2f}%"
            for rank, p in enumerate(predictions, start=1)
        ]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


# ----------------------------------------------------------------------------- model


def resolve_saved_model_dir(saved_model_dir) -> Path:
    """The SavedModel directory: `saved_model_dir` itself or its highest numbered version."""
    directory = Path(saved_model_dir)
    if not directory.is_dir():
        raise RunError(
            f"SavedModel directory {directory} does not exist; expected a version "
            "directory written by `cnnbuilder export` (e.g. saved_models/NAME/1), or a "
            ".tflite or .onnx file it wrote."
        )
    if _is_saved_model(directory):
        return directory
    versions = sorted(
        (int(child.name), child)
        for child in directory.iterdir()
        if re.fullmatch(r"[0-9]+", child.name) and _is_saved_model(child)
    )
    if versions:
        return versions[-1][1]
    raise RunError(
        f"{directory} is not a SavedModel (no saved_model.pb), holds no model.tflite or "
        "model.onnx, and holds no numbered version directory with one of them; expected "
        "the output of `cnnbuilder export`: a SavedModel directory, a .tflite or an .onnx "
        "file."
    )


def _is_saved_model(directory: Path) -> bool:
    """Whether `directory` holds a SavedModel protobuf."""
    return (directory / "saved_model.pb").is_file() or (directory / "saved_model.pbtxt").is_file()


def _load_signature(directory: Path):
    """(loaded SavedModel, its serving_default function, name of the uint8 image input)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as error:  # noqa: BLE001 -- corrupt protobufs, missing variables...
        raise RunError(
            f"Cannot load the SavedModel {directory}: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:500]}. Expected a SavedModel written by "
            "`cnnbuilder export`."
        ) from error
    signature = loaded.signatures.get(SIGNATURE)
    specs = {} if signature is None else signature.structured_input_signature[1]
    if len(specs) != 1 or next(iter(specs.values())).dtype != tf.uint8:
        raise RunError(
            f"The SavedModel {directory} has no {SIGNATURE!r} signature taking one batch "
            f"of uint8 images (found inputs {specs!r}); expected a SavedModel written by "
            "`cnnbuilder export`, whose serving_default accepts raw images."
        )
    return loaded, signature, next(iter(specs))


def _run_grouped(run, images: list[np.ndarray]) -> np.ndarray:
    """(N, K) probabilities, batching images of equal shape together through `run`
    (a uint8 batch -> probabilities)."""
    return np.stack(run_by_shape(run, images, _BATCH_SIZE))


def _class_names(directory: Path, labels: Path | str, num_classes: int) -> list[str]:
    """Class names from the labels file, else metadata.json, else ImageNet's for a
    1000-class model (an ImageNet head kept from pretrained weights, exported without
    names of its own), else "0".."K-1"."""
    labels_file = directory / labels
    if labels_file.is_file():
        names, origin = labels_file.read_text(encoding="utf-8").splitlines(), labels_file
    else:
        origin = directory / METADATA
        names = (read_json(origin, what="export metadata") or {}).get("class_names")
    if not names and num_classes == IMAGENET_CLASSES:
        from cnnbuilder.model.pretrained import imagenet_class_names

        return imagenet_class_names()
    if not names:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise RunError(
            f"{origin} lists {len(names)} class names but the model in {directory} outputs "
            f"{num_classes} probabilities; expected one name per class."
        )
    return [str(name) for name in names]


def _top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[dict]:
    """The k most probable classes, most probable first (ties: lower index first)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"label": class_names[i], "probability": float(probabilities[i])} for i in order
    ]
