"""`build(recipe, weights="torchvision" | "torchvision:ENUM" | "timm:MODEL.TAG" | FILE)`.

The source names the network its weights need (`WeightSource.build`, `params`): resnet50's
torchvision weights build `resnet50_tv`, densenet121's build densenet121 with PyTorch's
BatchNorm epsilon. A state-dict file given for a recipe builds what the recipe's default
source builds. The model is built as asked; when it is not the network the file holds
(another head, `include_top=False`, `features_only`, a flatten head at another size), the
weights go into a *donor* built as the file's network and `copy_matching` moves them over,
the head new — as for the keras.applications weights (`cnnbuilder.model.loading`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cnnbuilder.errors import RecipeError, WeightsError
from cnnbuilder.model.pretrained.convert import load_state_dict, normalize_keys
from cnnbuilder.model.pretrained.fetch import locate
from cnnbuilder.model.pretrained.sources import resolve_source, sources_for
from cnnbuilder.model.pretrained.state_dicts import read_state_dict, is_state_dict_file
from cnnbuilder.zoo import load_recipe

logger = logging.getLogger("cnnbuilder")
_CLASSIFIER = re.compile(r"^(?:fc|classifier)(?:\.(\d+))?\.weight$")


def pytorch_target(recipe, weights):
    """`(recipe to build, params the weights need, source or None, label)` for `weights`.

    Raises:
        WeightsError: an unknown source (see `resolve_source`).
    """
    recipe = load_recipe(recipe)
    if is_state_dict_file(weights):
        known = sources_for(recipe.name)
        if known:  # a file for resnet50 is torchvision's (or timm's) network: resnet50_tv
            return load_recipe(known[0].build), known[0].params, None, str(weights)
        return recipe, {}, None, str(weights)
    source = resolve_source(recipe.name, str(weights))
    return load_recipe(source.build), source.params, source, source.name


def build_pretrained(recipe, weights, *, params: dict, **kwargs):
    """Build `recipe` with the PyTorch-world `weights` (see the module docstring).

    Args:
        recipe: what `cnnbuilder.build` takes.
        weights: ``torchvision``, ``torchvision:ENUM``, ``timm:MODEL.TAG`` or a
            `.pth`/`.pt`/`.safetensors` state-dict file.
        params: the caller's recipe params; those the weights need win only where the
            caller did not set them, and a different value is refused.
        **kwargs: the other `build` arguments (include_top, input_shape, classes, ...).

    Returns:
        The model (of the recipe the weights need) with the weights loaded.

    Raises:
        RecipeError: a param that contradicts the weights.
        WeightsError: see `resolve_source`, `locate`, `read_state_dict`, `load_state_dict`.
    """
    from cnnbuilder.model.builder import build

    target, needed, _, label = pytorch_target(recipe, weights)
    params = with_needed(params, needed, label)
    model = build(target, **kwargs, **params)
    top = kwargs.get("include_top", True) and not kwargs.get("features_only")
    report = load_into(model, weights, target, include_top=top, params=params)
    (logger.warning if report.new else logger.info)(report.message(model.name))
    return model


def load_into(model, weights, recipe, *, include_top: bool, params: dict):
    """Load the PyTorch-world `weights` into `model`, a build of `recipe` (the recipe the
    weights need: resnet50_tv for resnet50's torchvision weights) with `params`.

    Returns:
        A `cnnbuilder.model.loading.LoadReport` (the loaded layers and the new ones).

    Raises:
        WeightsError: weights for another recipe, or see `load_state_dict`.
    """
    from cnnbuilder.model.builder import build
    from cnnbuilder.model.loading import LoadReport, copy_matching

    target, needed, source, label = pytorch_target(recipe, weights)
    if target.name != load_recipe(recipe).name:
        raise WeightsError(f"the weights {label} are for the network {target.name}, not "
                           f"{model.name}: build it with cnnbuilder.build({target.name!r}, "
                           f"weights={str(weights)!r}).")
    params = with_needed(params, needed, label)
    path = locate(source) if source is not None else Path(weights)
    state = normalize_keys(read_state_dict(path))
    label = f"{label} ({path})" if source is not None else label
    file_classes = _file_classes(state)
    if include_top and _same_network(model, target, file_classes):
        loaded = load_state_dict(model, state, target.family, source=label)
        return LoadReport(label, loaded)
    channels = int(model.inputs[0].shape[-1])
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape or _has_flatten(target):
        shape = (*target.default_input_shape[:2], channels)
    donor = build(target, input_shape=shape, classes=file_classes, classifier_activation=None,
                  **params)
    load_state_dict(donor, state, target.family, source=label)
    return copy_matching(donor, model, source=label)


def with_needed(params: dict, needed: dict, label: str) -> dict:
    """`params` with the values the weights need; a contradicting value is refused."""
    for key, value in needed.items():
        if key in params and params[key] != value:
            raise RecipeError(f"the weights {label} were trained with {key}={value!r}. "
                              f"Received: {key}={params[key]!r}")
    return {**needed, **params}


def _file_classes(state: dict) -> int | None:
    """The classes of the file's classifier (`fc` or the last `classifier.<n>`)."""
    found = sorted((int(m[1] or 0), key) for key in state if (m := _CLASSIFIER.match(key))
                   and state[key].ndim == 2)
    return int(state[found[-1][1]].shape[0]) if found else None


def _has_flatten(recipe) -> bool:
    """Whether the recipe's head flattens a feature map (its fc size depends on the input)."""
    return any(step.block == "flatten" for step in recipe.default_plan.steps)


def _same_network(model, target, file_classes) -> bool:
    """Whether `model`, with its top, is the whole network the weights are of (same head,
    same fc sizes)."""
    if len(model.outputs) != 1 or int(model.outputs[0].shape[-1]) != file_classes:
        return False
    return not _has_flatten(target) or tuple(model.inputs[0].shape[1:3]) == tuple(
        target.default_input_shape[:2])


__all__ = ["build_pretrained", "load_into", "pytorch_target"]
