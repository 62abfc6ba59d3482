"""Classify image files with a SavedModel written by `cnnbuilder.export`.

`predict(saved_model_dir, ["a.png", "b.jpg"])` reads each image as it is stored (uint8,
any size, grey / grey+alpha / RGB / RGBA) and feeds it to the SavedModel's
``serving_default`` signature, which resizes and converts it exactly as the model's
training pipeline did. The model's Python code is not needed: the SavedModel is
self-contained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnbuilder.errors import CnnBuilderError, RunError
from cnnbuilder.serving.images import read_image
from cnnbuilder.serving.metadata import LABELS_ASSET, METADATA
from cnnbuilder.training.rundir import read_json

__all__ = ["format_predictions", "predict", "read_image", "resolve_saved_model_dir"]

SIGNATURE = "serving_default"
# Images of one size go through the signature together, at most this many at a time.
_BATCH_SIZE = 32


def predict(saved_model_dir, image_paths: Sequence, *, top_k: int = 5) -> list[dict]:
    """Top-k class predictions of the exported model for each image file.

    Args:
        saved_model_dir: a version directory written by `cnnbuilder.export`
            (``saved_models/NAME/VERSION``), or its base path ``saved_models/NAME``, in
            which case the highest numbered version is used (as TF Serving does).
        image_paths: PNG / JPEG (or anything Pillow reads) files of any size and mode.
        top_k: how many classes to report per image (capped at the number of classes).

    Returns:
        ``[{"image": path, "predictions": [{"label": str, "probability": float}, ...]}]``
        in the order of `image_paths`, each list sorted by decreasing probability.

    Raises:
        RunError: the directory is missing, is not a SavedModel, or has no
            ``serving_default`` signature taking uint8 images.
        DataError: an image is missing or unreadable.
        CnnBuilderError: `top_k` is not a positive integer.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise CnnBuilderError(f"top_k must be a positive integer, got {top_k!r}.")
    directory = resolve_saved_model_dir(saved_model_dir)
    # Read every image before loading the model: a typo in a path fails fast.
    images = [read_image(path) for path in image_paths]
    if not images:
        return []
    # `loaded` owns the variables: it must outlive every call of the signature.
    loaded, signature, input_name = _load_signature(directory)
    probabilities = _run_grouped(signature, input_name, images)
    del loaded
    class_names = _class_names(directory, probabilities.shape[1])
    return [
        {"image": str(path), "predictions": _top_k(row, class_names, top_k)}
        for path, row in zip(image_paths, probabilities)
    ]


def format_predictions(results: Sequence[dict]) -> str:
    """Human-readable text of `predict`'s results: each image, then its ranked labels."""
    blocks = []
    for result in results:
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
            "directory written by `cnnbuilder export` (e.g. saved_models/NAME/1)."
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
        f"{directory} is not a SavedModel (no saved_model.pb) and holds no numbered "
        "version directory with one; expected the output of `cnnbuilder export`."
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


def _run_grouped(signature, input_name: str, images: list[np.ndarray]) -> np.ndarray:
    """(N, K) probabilities, batching images of equal shape together."""
    import tensorflow as tf

    groups: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    rows: dict[int, np.ndarray] = {}
    for indices in groups.values():
        for start in range(0, len(indices), _BATCH_SIZE):
            chunk = indices[start : start + _BATCH_SIZE]
            batch = tf.constant(np.stack([images[i] for i in chunk]))
            outputs = signature(**{input_name: batch})
            for i, row in zip(chunk, outputs["probabilities"].numpy()):
                rows[i] = row
    return np.stack([rows[i] for i in range(len(images))])


def _class_names(directory: Path, num_classes: int) -> list[str]:
    """Class names from assets/labels.txt, else metadata.json, else "0".."K-1"."""
    labels_file = directory / LABELS_ASSET
    if labels_file.is_file():
        names, origin = labels_file.read_text(encoding="utf-8").splitlines(), labels_file
    else:
        origin = directory / METADATA
        names = (read_json(origin, what="export metadata") or {}).get("class_names")
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
