"""A segmentation recipe's `backbone:`: the zoo recipe whose `features_only` feature maps are
its encoder, and the names the decoder reads them by.

```yaml
backbone: resnet34                              # the default encoder; build(..., backbone=NAME) replaces it
backbone: {recipe: resnet34}                    # the same
backbone: {recipe: null, decoder: unet_backbone} # a recipe with its own encoder: a build with
                                                # backbone=NAME builds `decoder` over NAME instead
```

The encoder's feature maps (the backbone recipe's feature taps, `cnnbuilder.recipe.taps`)
are named by their reduction: ``backbone_r2``, ``backbone_r4``, ... ``backbone_r32`` (the
last tap of a reduction when several share one); the decoder starts from the deepest and
joins the others with `skip`. Pure Python: the backbone is planned, not built, so a missing
reduction or a backbone without stages is a `RecipeError` before any layer exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from cnnbuilder.errors import RecipeError

BACKBONE_KEY = "backbone"
SPEC_KEYS = ("recipe", "decoder")
# The square input at which the taps' reductions are measured (any input size a decoder is
# built at then has the same names).
PROBE_SIZE = 512
PREFIX = "backbone_r"

# How a backbone's name becomes a `Recipe`: `cnnbuilder.zoo` installs its `load_recipe` here
# when it is imported (this package never imports it), as for `search_space.use_loader`.
_loader: Callable | None = None


def use_loader(load: Callable) -> None:
    """Set the function a backbone's name is loaded with (`cnnbuilder.load_recipe`)."""
    global _loader
    _loader = load


@dataclass(frozen=True)
class BackboneSpec:
    """A recipe's `backbone:`: the default encoder recipe (None: the recipe's own encoder)
    and, for a recipe with its own encoder, the decoder recipe a `backbone=` build uses."""

    recipe: str | None
    decoder: str | None = None


@dataclass(frozen=True)
class EncoderTap:
    """One encoder feature map a decoder reads: its `name` (``backbone_r8``), its `index`
    among the backbone's `features_only` outputs, its `reduction` and its `shape` at the
    planned input."""

    name: str
    index: int
    reduction: int
    shape: tuple


def backbone_spec(document) -> BackboneSpec | None:
    """The recipe's `backbone:` as a `BackboneSpec`, None when it has none.

    Raises:
        RecipeError: a value that is not a recipe name or a mapping of `recipe` and
            `decoder`, with the file and line.
    """
    value = document.data.get(BACKBONE_KEY)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return BackboneSpec(value)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in SPEC_KEYS]
        if unknown:
            raise document.error((BACKBONE_KEY, unknown[0]), f"unknown backbone key {unknown[0]!r}; "
                                 f"backbone: has {', '.join(SPEC_KEYS)}.")
        for key in SPEC_KEYS:
            if value.get(key) is not None and not (isinstance(value[key], str) and value[key]):
                raise document.error((BACKBONE_KEY, key), f"{key} = {value[key]!r}: expected a recipe name.")
        if value.get("recipe") is None and value.get("decoder") is None:
            raise document.error((BACKBONE_KEY,), "give `recipe:` (the default encoder) or `decoder:` "
                                 "(the recipe a build with backbone= uses).")
        return BackboneSpec(value.get("recipe"), value.get("decoder"))
    raise document.error((BACKBONE_KEY,), f"expected a recipe name (e.g. resnet34) or a mapping "
                         f"{{recipe: NAME, decoder: NAME}}, got {value!r}.")


def _tap_shapes(recipe, input_shape) -> list[tuple]:
    plan = recipe.plan(input_shape=input_shape, include_top=False)
    shapes = {step.name: step.output_shape for step in plan.steps}
    return plan, [shapes[tap.step] for tap in recipe.feature_taps(plan)]


def encoder_taps(name: str, input_shape: tuple, label: str) -> list[EncoderTap]:
    """The feature maps of backbone `name` at `input_shape`, named by reduction, in network
    order (the deepest last).

    Args:
        name: the backbone recipe (a zoo name or a path).
        input_shape: the segmentation model's input shape.
        label: where the backbone was named, for messages ("file, line 3, field backbone"
            or "keyword argument backbone='x'").

    Raises:
        RecipeError: an unknown recipe, or one without stages (no feature maps to decode).
    """
    if _loader is None:
        raise RecipeError(f"{label}: no recipe loader; import cnnbuilder first.")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{label}: a backbone is a recipe name such as resnet34, got {name!r}.")
    try:
        recipe = _loader(name)
    except RecipeError as exc:
        raise RecipeError(f"{label}: backbone {name!r}: {exc}") from None
    if not recipe.default_plan.stages:
        raise RecipeError(
            f"{label}: backbone {name!r} has no stages, so it has no feature maps (features_only) "
            f"for a decoder to read; name a recipe with stages, e.g. resnet34 or densenet121.")
    _, probe = _tap_shapes(recipe, (PROBE_SIZE, PROBE_SIZE, input_shape[-1]))
    _, shapes = _tap_shapes(recipe, tuple(input_shape))
    by_reduction: dict[int, EncoderTap] = {}
    for index, (seen, shape) in enumerate(zip(probe, shapes)):
        if len(seen) != 3:
            continue  # a vector, not a feature map
        reduction = 2 ** max(0, round(math.log2(PROBE_SIZE / seen[0])))
        by_reduction[reduction] = EncoderTap(f"{PREFIX}{reduction}", index, reduction, tuple(shape))
    return sorted(by_reduction.values(), key=lambda tap: tap.index)


__all__ = ["BACKBONE_KEY", "BackboneSpec", "EncoderTap", "backbone_spec", "encoder_taps", "use_loader"]
