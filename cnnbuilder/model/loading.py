"""Loading weights into a recipe build: ImageNet, weight files, `.keras` files, run directories.

When the weights were made for another head (other `classes`, no top, a `features_only`
model) they are first loaded into a *donor*, the same recipe built the way the weights
were, and `copy_matching` copies the donor's layers into the model by name (recipe builds
name their layers the same whatever the head): every backbone layer must fit, head layers
that do not are new (timm's `num_classes`). The message says which were loaded and which
are new.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from cnnbuilder import runs
from cnnbuilder.errors import RunError, WeightsError
from cnnbuilder.model.features import layer_stage
from cnnbuilder.model.pretrained.sources import is_pytorch_weights
from cnnbuilder.model.weights import keras_cache_file, load_through_reference

logger = logging.getLogger("cnnbuilder")
# keras.applications names the ImageNet classifier of every network it ships so.
_APPLICATION_CLASSIFIER = "predictions"


@dataclass
class LoadReport:
    """What `load_weights` did: the layers (with weights) loaded and the new ones."""

    source: str
    loaded: list = field(default_factory=list)
    new: list = field(default_factory=list)

    def message(self, model_name: str) -> str:
        """One sentence naming the loaded and the new layers."""
        text = f"{model_name}: {len(self.loaded)} layers with weights loaded from {self.source}"
        if self.loaded:
            text += f" ({self.loaded[0]} ... {self.loaded[-1]})"
        if self.new:
            return text + f"; new (randomly initialized): {', '.join(self.new)}."
        return text + "; no layer is new."


def load_weights(model: keras.Model, weights, *, recipe, include_top: bool, plan,
                 features_only: bool = False, params: dict | None = None) -> LoadReport:
    """Load `weights` into a model built from `recipe`.

    Args:
        model: the built model (changed in place).
        weights: "imagenet" (the keras.applications file from the Keras cache), a
            `.weights.h5` file of this recipe, a keras.applications `.h5` file (loaded
            into that application, then transferred), a `.keras` file or a run directory
            (its `model.keras`) of this recipe.
        recipe: the model's `Recipe` (its `metadata.keras_application`, `keras_weights`).
        include_top: whether the model has its classifier.
        plan: the model's `Plan`.
        features_only: whether the model is a `features_only` build.
        params: the recipe params the model was built with (a donor is built with them).

    Returns:
        A `LoadReport`; its message is logged (logger ``cnnbuilder``: a warning when some
        layers are new, as their weights are random).

    Raises:
        WeightsError: no such weights, or weights of another architecture (the first
            layer that does not fit is named).
    """
    report = _load(model, weights, recipe, include_top, plan, features_only, params or {})
    (logger.warning if report.new else logger.info)(report.message(model.name))
    return report


def _load(model, weights, recipe, include_top, plan, features_only, params) -> LoadReport:
    """`load_weights` without the log message."""
    meta = recipe.metadata
    top = include_top and not features_only
    if is_pytorch_weights(weights):  # torchvision, timm, .pth/.safetensors: model/pretrained
        from cnnbuilder.model.pretrained.load import load_into

        return load_into(model, weights, recipe, include_top=top, params=params)
    if weights == "imagenet":
        path, file_classes = imagenet_file(recipe, top, plan.input_shape)
        return _from_application_file(model, path, recipe, file_classes, top, features_only,
                                      params)
    path = Path(weights)
    if path.is_dir():
        path = runs.model_file(path, error=WeightsError)
    if path.suffix == ".keras":
        return copy_matching(_load_keras_file(path), model, source=str(path))
    if path.name.endswith(".weights.h5"):
        return _from_weights_file(model, path, recipe, params)
    if meta.get("keras_application"):
        classes = _application_file_classes(path)
        return _from_application_file(model, path, recipe, classes, top, features_only, params)
    try:
        model.load_weights(path)
    except Exception as exc:
        raise WeightsError(f"weights file {path} does not fit {model.name}: {exc}") from None
    return LoadReport(str(path), [layer.name for layer in model.layers if layer.weights])


def copy_matching(donor: keras.Model, model: keras.Model, *, source: str) -> LoadReport:
    """Copy the weights of `donor`'s layers into `model`'s layers of the same name.

    Every layer of `model` outside the head (`features.layer_stage` is not ``"head"``)
    must have a layer of the same name, type and weight shapes in `donor`; head layers
    without one are left as they are (new). Donor layers that `model` lacks may only
    come after the last one copied (a head, or the stages a truncated `features_only`
    model does not have): one before it means the architectures differ.

    Args:
        donor: the model holding the weights.
        model: the model to copy into (changed in place).
        source: where the weights come from, for messages.

    Returns:
        A `LoadReport`.

    Raises:
        WeightsError: the first layer that does not fit. Nothing is copied then.
    """
    donors = {layer.name: (index, layer) for index, layer in enumerate(donor.layers)}
    pairs, new = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        index, other = donors.get(layer.name, (None, None))
        problem = _misfit(layer, other)
        if problem is None:
            pairs.append((layer, other, index))
        elif layer_stage(layer) == "head":
            new.append(layer.name)
        else:
            raise WeightsError(
                f"the weights {source} do not fit {model.name}: its layer {layer.name} "
                f"({type(layer).__name__}, weights {_shapes(layer)}) {problem}; they are "
                "weights of another architecture (or of other recipe params)."
            )
    last = max((index for _, _, index in pairs), default=-1)
    used = {index for _, _, index in pairs}
    for index, other in enumerate(donor.layers[:last]):
        if other.weights and index not in used:
            raise WeightsError(
                f"the weights {source} do not fit {model.name}: they hold a layer "
                f"{other.name} ({type(other).__name__}, weights {_shapes(other)}) that "
                f"{model.name} does not have; they are weights of another architecture "
                "(or of other recipe params)."
            )
    for layer, other, _ in pairs:
        layer.set_weights([np.asarray(w) for w in other.get_weights()])
    return LoadReport(source, [layer.name for layer, _, _ in pairs], new)


def weights_normalization(weights, recipe) -> str | None:
    """The input normalization (`cnnbuilder.data.preprocess`) the weights were trained
    with, None when it is not known (random weights, or a weights file of our own).

    ImageNet weights and keras.applications files: the recipe's
    `metadata.preprocessing` (the keras.applications module's mode); a run directory, or
    the `model.keras` inside one: its run.json preprocessing record.
    """
    if weights is None:
        return None
    meta = recipe.metadata
    path = None if weights == "imagenet" else Path(weights)
    if path is None or (meta.get("keras_application") and path.suffix == ".h5"
                        and not path.name.endswith(".weights.h5")):
        return meta.get("preprocessing")
    if path.is_file() and path.suffix != ".keras":
        return None  # a weights file of our own: no record
    try:
        recorded = runs.recorded_preprocessing(runs.model_file(path, error=WeightsError))
    except RunError as error:
        raise WeightsError(f"the weights' run record cannot be used: {error}") from None
    normalization = (recorded or {}).get("normalization")
    if recorded is not None and not isinstance(normalization, str):
        raise WeightsError(f"the run.json beside {path} holds no preprocessing normalization; "
                           "it is not the record of a cnnbuilder run.")
    return normalization


# ------------------------------------------------------------------------- sources


def imagenet_file(recipe, top: bool, input_shape) -> tuple[Path, int | None]:
    """The ImageNet file to load into a model with (`top`) or without its classifier, and
    the file's classes (None: a file without the top).

    A model with a top at the default size prefers the file with the classifier (its
    layers before the last may load: VGG's fc1, fc2), else takes the one without.

    Raises:
        WeightsError: the recipe has no ImageNet weights, or the file is not in the Keras
            cache (the message says where to put it).
    """
    default = tuple(recipe.default_input_shape)
    wanted = [True, False] if top and tuple(input_shape) == default else [False]
    paths = [keras_cache_file(recipe, with_top) for with_top in wanted]
    if paths[0] is None:
        raise WeightsError(
            f"recipe {recipe.name!r} has no ImageNet weights: only recipes that mirror a "
            "keras.applications model (metadata.keras_application) can load them."
        )
    for with_top, path in zip(wanted, paths):
        if path is not None and path.is_file():
            return path, 1000 if with_top else None
    raise WeightsError(
        f"ImageNet weights for {recipe.name} are not in the Keras cache and cannot be "
        f"downloaded here. Put the file keras.applications."
        f"{recipe.metadata['keras_application']} downloads, {paths[0].name}, at {paths[0]} "
        "(or set KERAS_HOME), then retry (`cnnbuilder help fine-tuning`)."
    )


def _from_application_file(model, path, recipe, file_classes, top, features_only,
                           params) -> LoadReport:
    """Load a keras.applications file (with a classifier of `file_classes`, or none)."""
    application = recipe.metadata["keras_application"]
    classes = int(model.outputs[0].shape[-1]) if top else None
    if not features_only and top == (file_classes is not None) and classes == file_classes:
        load_through_reference(model, path, application, top)
        return LoadReport(str(path), [layer.name for layer in model.layers if layer.weights])
    from cnnbuilder.model.builder import build

    shape = tuple(model.inputs[0].shape[1:])
    if file_classes is not None and None in shape:
        shape = tuple(recipe.default_input_shape)
    donor = build(recipe, include_top=file_classes is not None, input_shape=shape,
                  classes=file_classes, **params)
    load_through_reference(donor, path, application, file_classes is not None)
    return copy_matching(donor, model, source=str(path))


def _from_weights_file(model, path: Path, recipe, params) -> LoadReport:
    """A Keras `.weights.h5` of this recipe: as it is, else through a donor without top."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(path)
        return LoadReport(str(path), [layer.name for layer in model.layers if layer.weights])
    except Exception as exc:  # keras raises ValueError/KeyError with details
        first = exc
    from cnnbuilder.model.builder import build

    donor = build(recipe, include_top=False, input_shape=tuple(model.inputs[0].shape[1:]),
                  **params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            donor.load_weights(path)
    except Exception:  # noqa: BLE001 - the first error says more
        raise WeightsError(f"weights file {path} does not fit {model.name}: {first}") from None
    return copy_matching(donor, model, source=str(path))


def _load_keras_file(path: Path) -> keras.Model:
    """A `.keras` model file, loaded safely, as a donor."""
    import cnnbuilder.model.layers  # noqa: F401  (registers the custom layers for loading)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - corrupt zips, bad configs, Lambda layers
        raise WeightsError(f"{path} cannot be loaded as a Keras model: {exc}") from None


def _application_file_classes(path: Path) -> int | None:
    """The classes of a keras.applications `.h5` file's classifier; None without one."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
            if _APPLICATION_CLASSIFIER not in names:
                return None
            layer = group[_APPLICATION_CLASSIFIER]
            kernel = layer.attrs["weight_names"][0]
            return int(layer[kernel.decode() if isinstance(kernel, bytes) else kernel].shape[-1])
    except (OSError, KeyError, IndexError) as exc:
        raise WeightsError(f"{path} is not a keras.applications weights file (HDF5 with "
                           f"layer_names): {exc}") from None


def _misfit(layer, other) -> str | None:
    """Why `other` (the donor's layer of the same name) cannot give `layer` its weights."""
    if other is None:
        return "is not in the weights"
    if type(other).__name__ != type(layer).__name__ or _shapes(other) != _shapes(layer):
        return f"is {type(other).__name__} with weights {_shapes(other)} there"
    return None


def _shapes(layer) -> list:
    return [tuple(w.shape) for w in layer.weights]



def load_model(path, *, compile: bool = True) -> keras.Model:
    """Load a trained model (`safe_mode=True`: no Lambda code is ever run).

    Args:
        path: a `.keras` file, a run directory written by `cnnbuilder.train` (its best
            epoch's model.keras) or a search directory written by `cnnbuilder.tune` (the
            best trial's best/model.keras).
        compile: restore the training configuration saved with the model (a finished
            run's: its optimizer family and settings, loss and accuracy), as
            `keras.saving.load_model` does.

    Returns:
        The `keras.Model`.

    Raises:
        RunError: no such file or run, or a file Keras cannot load.
    """
    import cnnbuilder.model.layers  # noqa: F401  (registers cnnbuilder's serializable layers)

    file = runs.model_file(path)
    try:
        return keras.saving.load_model(file, compile=compile, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - corrupt zips, foreign configs, Lambda layers
        detail = " ".join(str(exc).split())[:500]
        raise RunError(f"cannot load the Keras model {file}: {type(exc).__name__}: {detail}") from None


__all__ = ["LoadReport", "copy_matching", "imagenet_file", "load_model", "load_weights",
           "weights_normalization"]
