"""What an export says about itself: ``metadata.json``, the labels file and the weights
checksum.

``metadata.json`` holds the recipe, params, class names, the model's input and the
`preprocessing` record that turns raw images into it, training metrics, versions, a
weights checksum (`weights_checksum`), the export time and format, and what the format
writer adds (files, signatures, the LiteRT or ONNX check, quantization and its measured
accuracy). ``README.md`` beside it is the model card (`serving.model_card`).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnbuilder.data.preprocess import normalization_args, normalized_range
from cnnbuilder.runs import atomic_write_text

__all__ = ["LABELS", "LABELS_ASSET", "METADATA", "export_metadata", "model_input",
           "weights_checksum", "write_labels"]

METADATA = "metadata.json"
LABELS = "labels.txt"
# Where a SavedModel keeps the labels file (tf.saved_model.Asset copies it there).
LABELS_ASSET = Path("assets") / LABELS
_CHECKSUM_METHOD = (
    "sha256 over model.weights in order; for each weight the ASCII header "
    "'<dtype>:<dim0>x<dim1>...;' followed by its value as little-endian C-order bytes"
)


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


def model_input(input_shape: Sequence[int], preprocessing: dict) -> dict:
    """The float input the model itself takes: shape, dtype and value range."""
    return {
        "shape": [None, *input_shape],
        "dtype": "float32",
        "range": normalized_range(**normalization_args(preprocessing)),
    }


def write_labels(path: Path, class_names: Sequence[str]) -> None:
    """Class names one a line, in class-index order."""
    atomic_write_text(path, "".join(f"{name}\n" for name in class_names))


def export_metadata(source, fmt: str, class_names, input_shape, preprocessing,
                    details: dict) -> dict:
    """The metadata.json document of one export of `source` (a `serving.source.Source`)."""
    run = source.run or {}
    metadata = {
        "format": fmt,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": None if source.path is None else str(source.path),
        "model_name": source.model.name,
        "recipe": run.get("recipe"),
        "params": run.get("params"),
        "dataset": run.get("dataset"),
        "weights": run.get("weights"),  # what the run started from (the card's own section)
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "input": model_input(input_shape, preprocessing),
        "preprocessing": preprocessing,
        # How the run trained: the model card's training section.
        "training": run_training(run),
        "metrics": source.metrics,
        "versions": _versions(),
        "weights_sha256": weights_checksum(source.model),
        "weights_checksum_method": _CHECKSUM_METHOD,
        "num_weights": len(source.model.weights),
    }
    metadata.update(details)
    return metadata


def run_training(run: dict) -> dict:
    """The training of the run that `run` (its run.json) records: what the run did (its
    dataset and split sizes, augmentation, seed, and the settings as resolved, with each
    departure from the paper), and the paper's training apart, as the reference."""
    if not run:
        return {}
    paper = run.get("training") or {}
    training = {key: run[key] for key in ("dataset", "sizes", "augment", "seed") if key in run}
    if run.get("resolved_training"):
        training["resolved"] = run["resolved_training"]
    if paper.get("source"):
        training["reference"] = {key: paper.get(key) for key in
                                 ("source", "dataset", "dataset_size", "augment", "unit", "length")}
    return training


def _versions() -> dict:
    """Versions of cnnbuilder, Keras, TensorFlow and Python."""
    import keras
    import tensorflow as tf

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
