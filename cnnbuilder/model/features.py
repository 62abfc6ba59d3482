"""Feature maps of a network: which step outputs a backbone gives and at what stride.

`build(..., features_only=True, out_indices=...)` returns a model whose outputs are the
recipe's feature taps (`cnnbuilder.recipe.taps`: its `features:` list, which for the
networks timm has is timm's `feature_info`, e.g. a ResNet's stem ReLU at /2 then its four
stages; by default the ends of the stages), `out_indices` picking among them as in timm.
`feature_info` describes them as timm's `feature_info` does (stage, channels, reduction,
and the module/layer that produces each), so a detection or segmentation head can be
attached without reading the recipe. `stage_outputs` is the older description by layer name.

Every layer a recipe build creates carries the plan section it came from (`STAGE_ATTRIBUTE`:
``"stem"``, a stage name, or ``"head"``): freezing by stage and `feature_info` read it.
"""

from __future__ import annotations

import keras

from cnnbuilder.errors import RecipeError

# The attribute `apply_plan` sets on every layer it creates: the name of its stage.
STAGE_ATTRIBUTE = "cnnbuilder_stage"
# The attribute a features_only build sets on the layer producing a feature map: the
# tap's name as the recipe declares it (`feature_info`'s `module`).
FEATURE_ATTRIBUTE = "cnnbuilder_feature"


def feature_info(model: keras.Model) -> list[dict]:
    """Stage, channels and reduction of each output of a `features_only=True` model.

    Args:
        model: a functional model, typically `build(recipe, features_only=True)`.

    Returns:
        One dict per model output, in output order: ``stage`` (the recipe's stage name
        the output is in, ``"stem"`` for a tap in the stem, or the producing layer's name
        for a model not built from a recipe), ``channels`` (its last dimension),
        ``reduction`` (the cumulative stride, see `layer_strides`), ``layer`` (the Keras
        layer that produces it) and ``module`` (the tap's name in the recipe's
        `features:`, e.g. ``stem_activation1`` or ``conv2``; the layer name when unknown,
        e.g. after the model was saved and loaded).
    """
    strides = layer_strides(model)
    info = []
    for tensor in model.outputs:
        layer = tensor._keras_history.operation
        info.append({"stage": layer_stage(layer) or layer.name, "channels": tensor.shape[-1],
                     "reduction": strides.get(layer.name), "layer": layer.name,
                     "module": getattr(layer, FEATURE_ATTRIBUTE, None) or layer.name})
    return info


def tap_outputs(taps, step_outputs: dict) -> list:
    """The output tensors of the feature `taps` (`cnnbuilder.recipe.taps.Tap`), read from
    `step_outputs` (`{step name: tensor}`, as `apply_plan` fills it); the layer producing
    each is marked with the tap's name for `feature_info`."""
    outputs = []
    for tap in taps:
        tensor = step_outputs[tap.step]
        setattr(tensor._keras_history.operation, FEATURE_ATTRIBUTE, tap.name)
        outputs.append(tensor)
    return outputs


def stage_outputs(model: keras.Model) -> list[dict]:
    """Name, channels and stride of each output of a `features_only=True` model.

    The stride is the product of the convolution and pooling strides between the input and
    the output (4, 8, 16, 32 for a ResNet-50), as timm's `feature_info` reports it; it does
    not depend on the input size, and valid padding does not change it.

    Args:
        model: a functional model, typically `build(recipe, features_only=True)`.

    Returns:
        One dict per model output, in output order: `name` (the layer that produces it),
        `channels` (its last dimension) and `stride` (an int, see `layer_strides`).
    """
    strides = layer_strides(model)
    info = []
    for tensor in model.outputs:
        name = tensor._keras_history.operation.name
        info.append({"name": name, "channels": tensor.shape[-1], "stride": strides.get(name)})
    return info


def layer_stage(layer) -> str | None:
    """The plan section (``"stem"``, a stage name, ``"head"``) a recipe build created
    `layer` in; None for a layer of another model."""
    return getattr(layer, STAGE_ATTRIBUTE, None)


def layer_strides(model: keras.Model) -> dict[str, int]:
    """Cumulative stride of every layer's output, by layer name.

    A layer's stride is its own `strides` (1 for layers without one) times the largest
    stride among its inputs; an upsampling layer (`UpSampling2D`, a transposed
    convolution: a segmentation decoder's) divides it by its factor. A strided 1×1 convolution that the layer factory builds as a
    1×1 pooling followed by a stride-1 convolution (see `cnnbuilder.model.onednn`) counts
    the same: the pooling carries the stride.

    Args:
        model: a functional model.

    Returns:
        `{layer name: stride}` for every layer of `model`, the input layer included (1).
    """
    strides: dict[str, int] = {}
    for layer in model.layers:  # functional models list their layers in topological order
        inbound = [strides.get(t._keras_history.operation.name, 1)
                   for node in layer._inbound_nodes for t in node.input_tensors]
        stride = max(inbound, default=1)
        own = getattr(layer, "size" if isinstance(layer, keras.layers.UpSampling2D) else "strides", None)
        own = own[0] if isinstance(own, (tuple, list)) and own else (own if isinstance(own, int) else 1)
        if isinstance(layer, (keras.layers.UpSampling2D, keras.layers.Conv2DTranspose)):
            # A decoder's upsampling divides the reduction (16 -> 8 ... -> 1).
            strides[layer.name] = stride // own if stride % own == 0 else stride / own
        else:
            strides[layer.name] = stride * own
    return strides


__all__ = ["FEATURE_ATTRIBUTE", "STAGE_ATTRIBUTE", "feature_info", "tap_outputs", "layer_stage", "layer_strides",
           "stage_outputs"]
