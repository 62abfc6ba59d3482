"""Weights: copying between models of the same architecture, and loading weight files.

`transfer_weights` pairs layers by the structure of the graph, not by their names or the
order they were created in, so a keras.applications model and the same network built
from a recipe exchange weights even though every layer name differs.

Loading weight files, `.keras` files and run directories into a recipe build, with a
new head where the weights' differs, is `cnnbuilder.model.loading`.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from cnnbuilder.errors import WeightsError

# Merges whose result does not depend on the order of their inputs.
_COMMUTATIVE = (keras.layers.Add, keras.layers.Multiply, keras.layers.Maximum,
                keras.layers.Minimum, keras.layers.Average)


def canonical_layers(model: keras.Model) -> list:
    """Layers with weights, in an order fixed by the graph alone.

    A depth-first walk from the outputs that visits a layer's inputs in their own order,
    except for commutative merges, whose inputs are visited shallowest first (the
    shortcut before the residual branch, however the model was written). Layers with
    `canonical_sublayers` are replaced by those.

    Args:
        model: a functional model.

    Returns:
        The layers that own weights, in that order.
    """
    depth: dict[int, int] = {}

    def parents(layer):
        if not layer._inbound_nodes:
            return []
        node = layer._inbound_nodes[0]
        return [t._keras_history.operation for t in node.input_tensors]

    def depth_of(layer) -> int:
        key = id(layer)
        if key not in depth:
            stack = [layer]
            while stack:  # iterative, deep networks exceed Python's recursion limit
                current = stack[-1]
                pending = [p for p in parents(current) if id(p) not in depth]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                depth[id(current)] = 1 + max((depth[id(p)] for p in parents(current)), default=0)
        return depth[key]

    ordered, seen = [], set()
    roots = [t._keras_history.operation for t in model.outputs]
    stack = [(layer, False) for layer in reversed(roots)]
    while stack:
        layer, expanded = stack.pop()
        if id(layer) in seen:
            continue
        if expanded:
            seen.add(id(layer))
            ordered.append(layer)
            continue
        stack.append((layer, True))
        inputs = parents(layer)
        if isinstance(layer, _COMMUTATIVE):
            inputs = sorted(inputs, key=depth_of)
        for parent in reversed(inputs):
            if id(parent) not in seen:
                stack.append((parent, False))
    # A layer that stands for a chain of standard layers (the memory-efficient DenseNet
    # layer: BatchNormalization, Conv2D) counts as that chain, so it pairs with the plain build.
    flat = []
    for layer in ordered:
        flat.extend(getattr(layer, "canonical_sublayers", None) or [layer])
    return [layer for layer in flat if layer.weights]


def transfer_weights(source_model: keras.Model, target_model: keras.Model) -> keras.Model:
    """Copy every weight of `source_model` into `target_model` (same architecture, any names).

    Layers are paired by `canonical_layers` (the graph's structure), so a keras.applications
    model and the recipe build of the same network, or the plain and memory-efficient
    DenseNet builds, exchange weights.

    Args:
        source_model: the model to copy from.
        target_model: the model to copy into (changed in place).

    Returns:
        `target_model`.

    Raises:
        WeightsError: the models differ (number of weighted layers, or a pair of layers of
            other types or weight shapes; the first such pair is named). Nothing is copied.
    """
    source, target = canonical_layers(source_model), canonical_layers(target_model)
    if len(source) != len(target):
        raise WeightsError(
            f"cannot transfer weights: {source_model.name} has {len(source)} layers with "
            f"weights and {target_model.name} has {len(target)}; the architectures differ."
        )
    for src, dst in zip(source, target):
        src_shapes = [tuple(w.shape) for w in src.weights]
        dst_shapes = [tuple(w.shape) for w in dst.weights]
        if type(src).__name__ != type(dst).__name__ or src_shapes != dst_shapes:
            raise WeightsError(
                f"cannot transfer weights: layer {src.name} ({type(src).__name__}, weights "
                f"{src_shapes}) of {source_model.name} corresponds to {dst.name} "
                f"({type(dst).__name__}, weights {dst_shapes}) of {target_model.name}."
            )
    for src, dst in zip(source, target):
        dst.set_weights([np.asarray(w) for w in src.get_weights()])
    return target_model


def keras_cache_dir() -> Path:
    """Where keras.applications keeps downloaded weights: `$KERAS_HOME/models`, else
    `~/.keras/models`."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def keras_cache_file(recipe, include_top: bool) -> Path | None:
    """Where the recipe's keras.applications ImageNet file lies in the Keras cache (None
    when the recipe mirrors no keras.applications model)."""
    meta = recipe.metadata
    filename = (meta.get("keras_weights") or {}).get("top" if include_top else "notop")
    if not filename or not meta.get("keras_application"):
        return None
    return keras_cache_dir() / filename


def load_through_reference(model, path, application: str, include_top) -> None:
    """Load a keras.applications weight file into that application (built like `model`),
    then transfer its weights into `model` (`transfer_weights`)."""
    constructor = getattr(keras.applications, application)
    kwargs = dict(include_top=include_top, input_shape=tuple(model.inputs[0].shape[1:]))
    if include_top:
        kwargs["classes"] = int(model.outputs[0].shape[-1])
    try:
        reference = constructor(weights=str(path), **kwargs)
    except Exception as exc:
        raise WeightsError(
            f"weights file {path} could not be loaded into keras.applications.{application} "
            f"({'with' if include_top else 'without'} top): {exc}"
        ) from None
    transfer_weights(reference, model)
