"""Recipe → Keras functional model, with the keras.applications constructor arguments."""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from cnnbuilder.model.blocks import BLOCK_FUNCTIONS
from cnnbuilder.model.factory import LayerFactory
from cnnbuilder.errors import RecipeError, WeightsError
from cnnbuilder.recipe import Plan, Recipe
from cnnbuilder.recipe.vocabulary import ACTIVATIONS
from cnnbuilder.zoo import load_recipe


def build(recipe, *, include_top: bool = True, weights=None, input_tensor=None,
          input_shape=None, pooling=None, classes: int | None = None,
          classifier_activation="softmax", name: str | None = None,
          features_only: bool = False, **params) -> keras.Model:
    """Build a Keras functional model from a recipe.

    Arguments follow `keras.applications` constructors. `recipe` is a shipped name, a path
    to a .yaml file, a dict or a `Recipe`; extra keyword arguments override recipe params
    (`build("densenet121", growth_rate=12)`). `classes` defaults to the recipe's own
    (1000 for the ImageNet networks). `features_only=True` returns a model whose outputs
    are the end of every stage (see `stage_outputs`).
    """
    recipe = load_recipe(recipe)
    _check_arguments(recipe, include_top, weights, pooling, classes, classifier_activation)
    if features_only:
        include_top = False
    shape = _input_shape(recipe, include_top, weights, input_tensor, input_shape)
    plan = recipe.plan(input_shape=shape, include_top=include_top, classes=classes,
                       classifier_activation=classifier_activation, **params)

    # === Functional model ===
    if input_tensor is None:
        inputs = layers.Input(shape=shape, name="input")
        x = inputs
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs, x = input_tensor, input_tensor
    else:
        inputs = layers.Input(tensor=input_tensor, shape=shape, name="input")
        x = inputs
    x, stage_ends = apply_plan(plan, x)
    if features_only:
        outputs = [stage_ends[stage] for stage in plan.stages]
    elif not include_top and pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif not include_top and pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="max_pool")(x)
    else:
        outputs = x
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, outputs, name=name or recipe.name)

    if weights is not None:
        from cnnbuilder.model.weights import load_weights

        load_weights(model, weights, recipe=recipe, include_top=include_top, plan=plan)
    return model


def apply_plan(plan: Plan, x):
    """Apply every step of a plan to `x`; returns the output and each stage's last tensor."""
    nn = LayerFactory(plan.defaults)
    stage_ends = {}
    for index, step in enumerate(plan.steps):
        fields = dict(step.fields)
        if step.block == "conv":
            following = plan.steps[index + 1].block if index + 1 < len(plan.steps) else None
            fields["bn_follows"] = following == "bn"
        x = BLOCK_FUNCTIONS[step.block](x, nn=nn, name=step.name, **fields)
        if step.section == "stage":
            stage_ends[step.stage] = x
    return x, stage_ends


def stage_outputs(model: keras.Model) -> list[dict]:
    """Name, channels and stride of each output of a `features_only=True` model.

    The stride is the product of the convolution and pooling strides between the input and
    the output (4, 8, 16, 32 for a ResNet-50), as timm's `feature_info` reports it; it does
    not depend on the input size, and valid padding does not change it.
    """
    strides = layer_strides(model)
    info = []
    for tensor in model.outputs:
        name = tensor._keras_history.operation.name
        info.append({"name": name, "channels": tensor.shape[-1], "stride": strides.get(name)})
    return info


def layer_strides(model: keras.Model) -> dict[str, int]:
    """Cumulative stride of every layer's output, by layer name."""
    strides: dict[str, int] = {}
    for layer in model.layers:  # functional models list their layers in topological order
        inbound = [strides.get(t._keras_history.operation.name, 1)
                   for node in layer._inbound_nodes for t in node.input_tensors]
        own = getattr(layer, "strides", None)
        own = own[0] if isinstance(own, (tuple, list)) and own else (own if isinstance(own, int) else 1)
        strides[layer.name] = max(inbound, default=1) * own
    return strides


def _check_arguments(recipe: Recipe, include_top, weights, pooling, classes, activation):
    if not (weights in (None, "imagenet") or (isinstance(weights, (str, os.PathLike)) and Path(weights).is_file())):
        raise RecipeError(
            "The `weights` argument should be either `None` (random initialization), "
            "'imagenet' (pre-training on ImageNet), or the path to the weights file to be "
            f"loaded. Received: weights={weights!r}"
        )
    if weights == "imagenet" and include_top and classes not in (None, 1000):
        raise RecipeError(
            "If using `weights='imagenet'` with `include_top=True`, `classes` should be "
            f"1000. Received: classes={classes}"
        )
    if weights == "imagenet" and include_top and activation not in ("softmax", None):
        raise RecipeError(
            "Only `None` and `softmax` activations are allowed for the "
            f"`classifier_activation` argument when using pretrained weights, with "
            f"`include_top=True`; Received: classifier_activation={activation!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise RecipeError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise RecipeError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if activation is not None and activation not in ACTIVATIONS:
        raise RecipeError(
            f"`classifier_activation` must be None or one of {sorted(ACTIVATIONS)}. "
            f"Received: classifier_activation={activation!r}"
        )


def _input_shape(recipe: Recipe, include_top, weights, input_tensor, input_shape) -> tuple:
    default = recipe.default_input_shape
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        # As keras.applications: a fixed size is only needed for the classifier head.
        input_shape = default if include_top else (None, None, default[-1])
    input_shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise RecipeError(f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}")
    if input_shape[-1] is None:
        raise RecipeError(f"the channel count of `input_shape` must be known. Received: input_shape={input_shape}")
    if weights == "imagenet":
        if input_shape[-1] != default[-1]:
            raise WeightsError(
                f"ImageNet weights need {default[-1]} input channels. Received: input_shape={input_shape}"
            )
        if include_top and input_shape != default:
            raise WeightsError(
                "When setting `include_top=True` and loading `imagenet` weights, `input_shape` "
                f"should be {default}. Received: input_shape={input_shape}"
            )
    return input_shape
