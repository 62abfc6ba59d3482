"""Freezing parts of a recipe build for transfer learning: `freeze`.

A frozen layer has ``trainable = False``: its weights stay as they are (the optimizer
never sees them) and, for `BatchNormalization`, Keras 3 runs it in inference mode (its
moving statistics are used and never updated; `BatchNormalization.call` normalizes with
the batch statistics only when ``training and self.trainable``), as Keras'
transfer-learning guide prescribes. The flag is part of every layer's config, so a saved
``.keras`` checkpoint reloads frozen.

What can be frozen is named by the plan's sections, which every recipe build tags its
layers with (`features.STAGE_ATTRIBUTE`): ``stem`` and the stage names (``conv2`` ...
``conv5`` for a ResNet-50), or ``backbone`` for all of them (everything but the head;
of a segmentation network over a `backbone:`, its encoder alone: the decoder trains).
"""

from __future__ import annotations

import keras

from cnnbuilder.errors import RecipeError
from cnnbuilder.model.encoder import encoder_layer
from cnnbuilder.model.features import layer_stage

BACKBONE = "backbone"
HEAD = "head"


def model_stages(model: keras.Model) -> list[str]:
    """The sections of a recipe build in order (``stem``, the stages, ``head``); empty for
    a model not built from a recipe."""
    stages = []
    for layer in model.layers:
        stage = layer_stage(layer)
        if stage is not None and stage not in stages:
            stages.append(stage)
    return stages


def parse_freeze(spec) -> tuple[str, ...] | None:
    """`freeze=` as given (None, ``"backbone"``, ``"stem,conv2"`` or a list of names) as a
    tuple of names; None for nothing frozen.

    Raises:
        RecipeError: not a string or a list of strings.
    """
    if spec is None:
        return None
    names = spec.split(",") if isinstance(spec, str) else spec
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise RecipeError(f"`freeze` must be 'backbone' or stage names (a comma-separated "
                          f"string or a list). Received: freeze={spec!r}")
    names = tuple(n.strip() for n in names if n.strip())
    return names or None


def resolve_freeze(model: keras.Model, spec) -> tuple[str, ...]:
    """The sections of `model` that `spec` freezes, in model order.

    Raises:
        RecipeError: a model not built from a recipe, or see `check_freeze`.
    """
    if parse_freeze(spec) is None:
        return ()
    stages = model_stages(model)
    if not stages:
        raise RecipeError(f"`freeze` names stages of a recipe build; {model.name} was not built "
                          "from a recipe (set `layer.trainable = False` on its layers instead).")
    encoder = [stage for stage in stages
               if any(encoder_layer(layer) for layer in model.layers if layer_stage(layer) == stage)]
    return check_freeze(stages, spec, model.name, encoder=encoder)


def check_freeze(stages: list[str], spec, name: str, *, encoder=()) -> tuple[str, ...]:
    """The sections among `stages` (a network's ``stem``, stages, ``head``, in order) that
    `spec` freezes, in that order; `name` is the network's, for messages. With `encoder`
    (the sections of a backbone network's encoder), ``backbone`` means those alone: the
    decoder and the head train.

    Raises:
        RecipeError: the head, or an unknown stage name (the stages are listed).
    """
    names = parse_freeze(spec)
    if names is None:
        return ()
    frozen = [s for s in stages if s != HEAD]
    known = [BACKBONE, *frozen]
    unknown = [n for n in names if n not in known]
    if unknown:
        extra = " (the head is what trains)" if HEAD in unknown else ""
        raise RecipeError(f"`freeze`: no stage {', '.join(map(repr, unknown))} in {name}"
                          f"{extra}; choose from {', '.join(known)}. Received: freeze={spec!r}")
    backbone = [s for s in frozen if s in encoder] if encoder else frozen
    return tuple(s for s in frozen if s in names or (BACKBONE in names and s in backbone))


def freeze(model: keras.Model, spec) -> tuple[str, ...]:
    """Freeze the layers of the sections `spec` names (see the module docstring).

    Call it before `model.compile`: Keras reads ``trainable`` when it compiles.

    Args:
        model: a recipe build (changed in place).
        spec: None, ``"backbone"``, ``"stem,conv2"`` or a list of section names.

    Returns:
        The frozen sections, in model order (empty for None).

    Raises:
        RecipeError: see `resolve_freeze`.
    """
    stages = resolve_freeze(model, spec)
    for layer in model.layers:
        if layer_stage(layer) in stages:
            layer.trainable = False
    return stages


__all__ = ["BACKBONE", "check_freeze", "freeze", "model_stages", "parse_freeze",
           "resolve_freeze"]
