"""Recipe → Keras functional model, with the keras.applications constructor arguments.

`build` resolves the recipe into a `Plan` (every recipe error is raised there, before any
layer exists), then `apply_plan` calls one block function per step. Feature extraction
(`stage_outputs`, `layer_strides`) lives in `cnnbuilder.model.features` and is re-exported
here for the callers that import it from this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from cnnbuilder.model import cost
from cnnbuilder.model.blocks import BLOCK_FUNCTIONS
from cnnbuilder.model.encoder import (copy_encoder_weights, load_encoder_weights, mark_encoder,
                                      whole_model_weights)
from cnnbuilder.model.factory import LayerFactory
from cnnbuilder.model.features import STAGE_ATTRIBUTE, layer_strides, stage_outputs, tap_outputs
from cnnbuilder.errors import RecipeError, WeightsError
from cnnbuilder.recipe import Plan, Recipe, checks
from cnnbuilder.recipe.taps import select_taps
from cnnbuilder.recipe.resolve import skip_target
from cnnbuilder.recipe.vocabulary import ACTIVATIONS
from cnnbuilder.zoo import list_recipes, load_recipe


def build(recipe, *, include_top: bool = True, weights=None, input_tensor=None,
          input_shape=None, pooling=None, classes: int | None = None,
          classifier_activation="softmax", name: str | None = None,
          features_only: bool = False, out_indices=None, **params) -> keras.Model:
    """Build a Keras functional model from a recipe.

    Arguments follow `keras.applications` constructors and behave like them.

    Args:
        recipe: a shipped recipe name, a path to a .yaml file, a dict or a `Recipe`.
        include_top: keep the recipe's `head:` (the classifier).
        weights: None (random initialization), "imagenet" (the keras.applications file
            from the Keras cache, for recipes that mirror one), a weights file
            (`.weights.h5`, a keras.applications `.h5`), a `.keras` model file or a
            cnnbuilder run directory (its `model.keras`); or PyTorch-world weights:
            "torchvision", "torchvision:ENUM", "timm:MODEL.TAG" or a `.pth`/`.pt`/
            `.safetensors` state dict (`cnnbuilder.model.pretrained`; they build the
            variant of the recipe they need, e.g. resnet50_tv). Where `classes`, `include_top`
            or `features_only` differ from the weights', the backbone is loaded and the
            head is new; a log message (logger ``cnnbuilder``) names the new layers.
        input_tensor: a tensor to build the model on (a Keras tensor is used as is).
        input_shape: (height, width, channels); defaults to the recipe's, or
            (None, None, channels) without the top.
        pooling: without the top, None (the 4-D feature map), "avg" or "max".
        classes: classifier outputs; defaults to the recipe's own (1000 for ImageNet).
        classifier_activation: the head's activation ("softmax", None for logits, ...).
        name: the model name; defaults to the recipe's.
        features_only: return a model whose outputs are the recipe's feature taps (its
            `features:` list, timm's feature_info for the networks timm has; by default
            the ends of the stages; see `feature_info`); implies no top.
        out_indices: with `features_only`, the feature maps to output, by index into
            the taps as timm's `out_indices` (negative from the end); default all. The
            model ends at the last one chosen.
        **params: overrides of the recipe's params (`build("densenet121", growth_rate=12)`).
            ``backbone=NAME`` (a keyword, not a param) gives a segmentation recipe with a
            `backbone:` its encoder: zoo recipe NAME's `features_only` feature maps, with
            `weights` loaded into it (`build("unet", backbone="resnet34",
            weights="torchvision", classes=3)`; `cnnbuilder.recipe.backbone`).

    Returns:
        A `keras.Model` (functional) of standard Keras layers, with deterministic names.

    Raises:
        RecipeError: a bad recipe, param or argument (a `ValueError`), before any layer
            is built.
        WeightsError: weights that are missing or do not fit.
    """
    from cnnbuilder.model.pretrained.sources import is_pytorch_weights

    input_shape = checks.input_shape(input_shape)
    classes = checks.classes(classes)
    name = None if name is None else checks.name(name)
    backbone = params.pop("backbone", None)
    loaded = _loaded(recipe, backbone, pytorch=is_pytorch_weights(weights))
    if loaded is not None and (backbone is not None or (loaded.backbone and loaded.backbone.recipe)):
        return _build_with_backbone(
            loaded, backbone, include_top=include_top, weights=weights,
            input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, name=name, features_only=features_only,
            out_indices=out_indices, params=params)
    if is_pytorch_weights(weights):  # they build the network they need (resnet50_tv...)
        from cnnbuilder.model.pretrained.load import build_pretrained

        return build_pretrained(recipe, weights, params=params, include_top=include_top,
                                input_tensor=input_tensor, input_shape=input_shape,
                                pooling=pooling, classes=classes,
                                classifier_activation=classifier_activation, name=name,
                                features_only=features_only, out_indices=out_indices)
    recipe = loaded
    include_top, shape = _checked_arguments(recipe, include_top, weights, input_tensor,
                                            input_shape, pooling, classes, classifier_activation,
                                            features_only, out_indices)
    plan = recipe.plan(input_shape=shape, include_top=include_top, classes=classes,
                       classifier_activation=classifier_activation, backbone=backbone, **params)

    return build_planned(recipe, plan, include_top=include_top, weights=weights,
                         input_tensor=input_tensor,
                         pooling=pooling, name=name, features_only=features_only,
                         out_indices=out_indices, params=params)


def build_planned(recipe: Recipe, plan: Plan, *, include_top: bool = True, weights=None,
                  input_tensor=None, pooling=None,
                  name: str | None = None, features_only: bool = False, out_indices=None,
                  params: dict | None = None) -> keras.Model:
    """The model of a `plan` already resolved from `recipe` (`build` after its checks;
    a training run, which planned its recipe once, builds through this).

    Args:
        recipe: the loaded `Recipe`.
        plan: ``recipe.plan(...)``: input shape, head, classes and params resolved.
        include_top: whether `plan` was resolved with the head.
        weights, input_tensor, pooling, name, features_only, out_indices: as `build`.
        params: the params `plan` was resolved with (a weights donor is built with them).
    """
    # Made as a skeleton first: the model's cost is bounded before anything is allocated.
    model = cost.bounded(recipe, plan, lambda: _functional_model(
        recipe, plan, input_tensor, include_top, pooling, features_only, out_indices, name))

    if weights is not None and plan.encoder and not whole_model_weights(weights, model):
        load_encoder_weights(model, plan, weights)
    elif weights is not None:
        from cnnbuilder.model.loading import load_weights

        load_weights(model, weights, recipe=recipe, include_top=include_top, plan=plan,
                     features_only=features_only, params=params or {})
    return model


def _checked_arguments(recipe, include_top, weights, input_tensor, input_shape, pooling, classes,
                       classifier_activation, features_only, out_indices) -> tuple:
    """(include_top, input shape) of a build after its keras.applications arguments are
    checked (`out_indices` only with `features_only`, which implies no top)."""
    _check_arguments(recipe, include_top, weights, pooling, classes, classifier_activation)
    if out_indices is not None and not features_only:
        raise RecipeError(f"`out_indices` selects the outputs of `features_only=True`. "
                          f"Received: out_indices={out_indices!r} without features_only")
    include_top = include_top and not features_only
    return include_top, _input_shape(recipe, include_top, weights, input_tensor, input_shape, classes)


def _decoder_recipe(recipe: Recipe) -> Recipe:
    """The recipe a build with ``backbone=`` uses: `recipe` itself, or the `decoder` its
    `backbone:` names when it has its own encoder (``unet`` -> ``unet_backbone``)."""
    spec = recipe.backbone
    if spec is not None and spec.recipe is None and spec.decoder:
        return load_recipe(spec.decoder)
    return recipe


def _loaded(recipe, backbone, *, pytorch: bool) -> Recipe | None:
    """The `Recipe` `build` uses, loaded once: with ``backbone=``, the recipe's decoder
    (`_decoder_recipe`); None where PyTorch-world weights name something that is not a
    recipe (their loader reports it in its own words)."""
    if backbone is not None:
        return _decoder_recipe(load_recipe(recipe))
    if not pytorch:
        return load_recipe(recipe)
    try:
        return load_recipe(recipe)
    except (RecipeError, OSError):
        return None


def _build_with_backbone(recipe: Recipe, backbone, *, include_top, weights, input_tensor,
                         input_shape, pooling, classes, classifier_activation, name,
                         features_only, out_indices, params) -> keras.Model:
    """`build` of a recipe whose encoder is a backbone recipe (`backbone` or its own
    `backbone:`). With `weights`, the backbone is first built with them
    (`build(backbone, features_only=True, weights=...)`: any source it takes, "imagenet",
    "torchvision", "timm:...", a file; PyTorch-world weights may pick the variant they need,
    e.g. resnet50_tv), the decoder is planned over that network and the encoder's weights
    are copied from it layer by layer; the decoder keeps its initialisation. A Keras file
    or run of the whole network loads into all of it (`encoder.whole_model_weights`)."""
    include_top, shape = _checked_arguments(recipe, include_top, None, input_tensor, input_shape,
                                            pooling, classes, classifier_activation,
                                            features_only, out_indices)
    encoder = backbone if backbone is not None else recipe.backbone.recipe
    donor = None
    from cnnbuilder.model.pretrained.sources import is_pytorch_weights

    backbone_source = weights == "imagenet" or is_pytorch_weights(weights)
    if weights is not None and backbone_source:
        # Checked first: a bad argument or a missing decoder param fails before the donor.
        recipe.plan(input_shape=shape, include_top=include_top, classes=classes,
                    classifier_activation=classifier_activation, backbone=encoder, **params)
        donor = build(encoder, features_only=True, weights=weights, input_shape=shape)
        if donor.name != encoder and donor.name in list_recipes():
            encoder = donor.name  # the variant the weights were made for
    plan = recipe.plan(input_shape=shape, include_top=include_top, classes=classes,
                       classifier_activation=classifier_activation, backbone=encoder, **params)
    # A Keras file or run goes to build_planned: the whole network's, or the backbone's.
    model = build_planned(recipe, plan, include_top=include_top, input_tensor=input_tensor,
                          pooling=pooling, name=name, features_only=features_only,
                          out_indices=out_indices, params=params,
                          weights=None if backbone_source else weights)
    if donor is not None:
        copy_encoder_weights(donor, model)
    return model


def _functional_model(recipe, plan, input_tensor, include_top, pooling, features_only,
                      out_indices, name) -> keras.Model:
    """The functional graph of `plan` (on `input_tensor` when given); see `build`."""
    shape = plan.input_shape
    # === Functional model ===
    if input_tensor is None:
        inputs = layers.Input(shape=shape, name="input")
        x = inputs
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs, x = input_tensor, input_tensor
    else:
        inputs = layers.Input(tensor=input_tensor, shape=shape, name="input")
        x = inputs
    taps = select_taps(recipe.feature_taps(plan), out_indices) if features_only else []
    step_outputs, sources = {}, {}
    if plan.encoder:  # the backbone's feature maps on this input; the steps decode them
        backbone = build(plan.backbone, features_only=True, input_tensor=x)
        mark_encoder(backbone)
        encoder = backbone.outputs
        sources = {tap.name: encoder[tap.index] for tap in plan.encoder}
        x = encoder[plan.encoder[-1].index]
    x, _ = apply_plan(plan, x, step_outputs, sources)
    if features_only:
        outputs = tap_outputs(taps, step_outputs)
    elif not include_top and pooling == "avg":
        outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif not include_top and pooling == "max":
        outputs = layers.GlobalMaxPooling2D(name="max_pool")(x)
    else:
        outputs = x
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(inputs, outputs, name=name or recipe.name)


def apply_plan(plan: Plan, x, step_outputs: dict | None = None, sources: dict | None = None):
    """Apply every step of a plan to `x`, one block function per step.

    Args:
        plan: a resolved `Plan` (its steps, block fields, layer names and defaults).
        x: the input tensor.
        step_outputs: a dict to fill with every step's output tensor, by step name (the
            feature taps of `features_only` are read from it).
        sources: tensors made before the plan that `skip` and `branch` may read by name
            (a backbone's feature maps, ``backbone_r8``...).

    Every layer a step creates is tagged with its stage (`features.STAGE_ATTRIBUTE`:
    ``"stem"``, the stage name or ``"head"``), which freezing by stage reads.

    A `skip` step receives as `source` the earlier output its `from:` names: a stage's
    end, else a named step's output (`cnnbuilder.recipe.resolve.skip_target`, which the
    resolver has already checked); those outputs are kept while the plan is applied.

    Returns:
        `(output, stage_ends)`: the last tensor, and `{stage name: its last tensor}` for the
        stages (not the stem or head).
    """
    nn = LayerFactory(plan.defaults)
    stage_ends = {}
    ends, outputs = {}, dict(sources or {})  # section ends and step outputs, for skips
    for index, step in enumerate(plan.steps):
        fields = dict(step.fields)
        if step.block in ("skip", "branch"):
            source = fields.pop("from")
            fields["source"] = (ends if skip_target(plan.steps, index, source) == "stage" else outputs)[source]
        if step.block == "conv":
            following = plan.steps[index + 1].block if index + 1 < len(plan.steps) else None
            fields["bn_follows"] = following == "bn"
        before = x
        x = BLOCK_FUNCTIONS[step.block](x, nn=nn, name=step.name, **fields)
        section = step.stage if step.section == "stage" else step.section
        _tag_layers(before, x, section)
        if step.section == "stage":
            stage_ends[step.stage] = x
        if step_outputs is not None:
            step_outputs[step.name] = x
        outputs[step.name] = x
        if index + 1 == len(plan.steps) or plan.steps[index + 1].stage != step.stage:
            ends[step.stage] = x
    return x, stage_ends


def _tag_layers(start, end, section: str) -> None:
    """Tag the layers between the tensors `start` and `end` (one step's) with `section`.

    Walks back from `end` and stops at `start` and at layers already tagged (an earlier
    step's, reached through a shortcut or a dense connection).
    """
    stack, seen = [end], set()
    while stack:
        tensor = stack.pop()
        if tensor is start or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        layer = tensor._keras_history.operation
        if isinstance(layer, keras.layers.InputLayer) or hasattr(layer, STAGE_ATTRIBUTE):
            continue
        setattr(layer, STAGE_ATTRIBUTE, section)
        for node in layer._inbound_nodes:
            stack.extend(node.input_tensors)


def _check_arguments(recipe: Recipe, include_top, weights, pooling, classes, activation):
    if not (weights in (None, "imagenet") or (isinstance(weights, (str, os.PathLike)) and Path(weights).exists())):
        raise RecipeError(
            "The `weights` argument should be either `None` (random initialization), "
            "'imagenet' (pre-training on ImageNet), or the path to the weights file, "
            f"`.keras` file or run directory to be loaded. Received: weights={weights!r}"
        )
    # With another class count the head is new (as timm's num_classes): only a kept
    # ImageNet classifier constrains the activation, as in keras.applications.
    if weights == "imagenet" and include_top and classes in (None, 1000) and activation not in ("softmax", None):
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


def _input_shape(recipe: Recipe, include_top, weights, input_tensor, input_shape,
                 classes=None) -> tuple:
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
        if include_top and classes in (None, 1000) and input_shape != default:
            raise WeightsError(
                "When setting `include_top=True` and loading `imagenet` weights, `input_shape` "
                f"should be {default}. Received: input_shape={input_shape}"
            )
    return input_shape


# stage_outputs and layer_strides moved to cnnbuilder.model.features; importable from here too.
__all__ = ["apply_plan", "build", "build_planned", "layer_strides", "stage_outputs"]
