"""Feature maps of a network: where each stage ends and at what stride.

`build(..., features_only=True)` returns a model whose outputs are the ends of the stages;
`stage_outputs` describes them as timm's `feature_info` does (name, channels, stride), so a
detection or segmentation head can be attached without reading the recipe.
"""

from __future__ import annotations

import keras


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


def layer_strides(model: keras.Model) -> dict[str, int]:
    """Cumulative stride of every layer's output, by layer name.

    A layer's stride is its own `strides` (1 for layers without one) times the largest
    stride among its inputs. A strided 1×1 convolution that the layer factory builds as a
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
        own = getattr(layer, "strides", None)
        own = own[0] if isinstance(own, (tuple, list)) and own else (own if isinstance(own, int) else 1)
        strides[layer.name] = max(inbound, default=1) * own
    return strides


__all__ = ["layer_strides", "stage_outputs"]
