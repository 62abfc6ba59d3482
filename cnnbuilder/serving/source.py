"""What an export starts from: a Keras model and what its training run recorded.

`load_source` accepts a `keras.Model`, a run or search directory or a ``.keras`` file
(found by `cnnbuilder.runs.model_file`, as `load_model` and fine-tuning find them), and
checks that the model is an image classifier; the class names and the preprocessing
record come from the run's ``run.json`` where there is one.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from cnnbuilder.data.preprocess import check_preprocessing_config, preprocessing_config
from cnnbuilder.errors import DataError, RunError
from cnnbuilder.serving.metadata import LABELS
from cnnbuilder import runs

__all__ = ["Source", "classifier_shape", "load_source", "recorded_preprocessing",
           "resolve_class_names"]


@dataclasses.dataclass
class Source:
    """A model to export and what its training run recorded about it."""

    model: Any
    path: Path | None = None
    run: dict | None = None
    metrics: dict | None = None
    directory: Path | None = None       # the run directory run.json was read from
    preprocessing: dict | None = None   # its recorded preprocessing (`runs.recorded_preprocessing`)


def load_source(model_or_run) -> Source:
    """The model plus run.json / metrics.json from a model, run directory or .keras file.

    Raises:
        RunError: the path is missing, not a run directory or .keras file, or unloadable.
    """
    import keras

    if isinstance(model_or_run, keras.Model):
        return Source(model=model_or_run)
    if not isinstance(model_or_run, (str, os.PathLike)):
        raise RunError(
            f"export() takes a keras.Model, a run directory or a .keras file path, got "
            f"{type(model_or_run).__name__}."
        )
    path = Path(model_or_run)
    model_file = runs.model_file(path)  # the file, a run's model.keras or a search's best/
    run = metrics = preprocessing = None
    # Only a model.keras beside its run.json is known to belong to the run files there.
    directory = runs.run_directory(model_file)
    if directory is not None:
        run = runs.run_record(model_file)
        metrics = runs.read_json(directory / runs.METRICS, what="training metrics")
        preprocessing = runs.preprocessing_in(run, directory)
    return Source(model=_load_keras_model(model_file), path=path, run=run, metrics=metrics,
                  directory=directory, preprocessing=preprocessing)


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


def classifier_shape(source: Source) -> tuple[tuple[int, int, int], int]:
    """((H, W, C), K) of a one-input image model with one (None, K) output.

    Raises:
        RunError: the model is not such a classifier.
    """
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


def resolve_class_names(class_names, source: Source, num_classes: int) -> list[str]:
    """Class names from the argument, else run.json, else "0".."K-1"; checked against K."""
    if class_names is not None:
        names, origin = class_names, "class_names argument"
    elif source.run and source.run.get("class_names") is not None:
        names = source.run["class_names"]
        origin = f"class_names of {source.directory / runs.RUN}"
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
            f"expected one line of text per class (they are stored one a line in {LABELS})."
        )
    return names


def recorded_preprocessing(source: Source, input_shape) -> dict:
    """The run's preprocessing record (`preprocessing_config`), checked against the model.

    A model without a run, or a run without a record, gets ``unit`` preprocessing, as
    does a run.json written before normalization modes existed.

    Raises:
        RunError: the record is malformed or describes another input shape.
    """
    recorded = source.preprocessing
    if recorded is None:
        return preprocessing_config(input_shape)
    try:
        return check_preprocessing_config(recorded, input_shape)
    except DataError as error:
        raise RunError(f"{source.directory / runs.RUN}: {error}") from None
