"""The encoder of a `backbone:` segmentation network: which layers it is, and its weights.

A decoder recipe over a backbone (``unet_backbone``, ``fpn``) builds the backbone's
`features_only` network as its encoder (`cnnbuilder.model.builder`). Its layers are marked
(`ENCODER_ATTRIBUTE`), so ``freeze="backbone"`` freezes the encoder alone and the decoder
trains. Weights given for such a network are either the backbone's (``"imagenet"``,
PyTorch-world sources, a backbone's file or run: loaded into the encoder by building the
backbone with them and copying by layer name) or the whole network's (a ``.keras`` file or
run directory holding the decoder's layers too: loaded as any model's, decoder included).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from cnnbuilder import runs
from cnnbuilder.errors import WeightsError

# The attribute set on every layer of a backbone network's encoder.
ENCODER_ATTRIBUTE = "cnnbuilder_encoder"

__all__ = ["ENCODER_ATTRIBUTE", "copy_encoder_weights", "encoder_layer", "load_encoder_weights",
           "mark_encoder", "whole_model_weights"]


def mark_encoder(backbone: keras.Model) -> None:
    """Mark every layer of `backbone` (the encoder inside a decoder network) as the encoder's."""
    for layer in backbone.layers:
        setattr(layer, ENCODER_ATTRIBUTE, True)


def encoder_layer(layer) -> bool:
    """Whether `layer` belongs to a backbone network's encoder."""
    return bool(getattr(layer, ENCODER_ATTRIBUTE, False))


def whole_model_weights(weights, model: keras.Model) -> bool:
    """Whether `weights` hold the whole of `model` (an encoder-decoder network): a ``.keras``
    file or run directory with a layer of the decoder's, rather than the backbone's weights."""
    if not isinstance(weights, (str, os.PathLike)) or weights == "imagenet":
        return False
    path = Path(weights)
    if path.is_dir():
        path = runs.model_file(path, error=WeightsError)
    if path.suffix != ".keras" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        names = {entry.get("name") for entry in config["config"]["layers"]}
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return False  # not readable here: the backbone's loader reports it
    return any(layer.name in names for layer in model.layers
               if layer.weights and not encoder_layer(layer))


def load_encoder_weights(model: keras.Model, plan, weights) -> None:
    """Load the backbone's `weights` into the encoder of `model`, built from `plan` (the
    backbone built with them, its weights copied by layer name)."""
    from cnnbuilder.model.builder import build

    copy_encoder_weights(build(plan.backbone, features_only=True, weights=weights,
                               input_shape=plan.input_shape), model)


def copy_encoder_weights(donor: keras.Model, model: keras.Model) -> None:
    """Copy every weight of `donor` (a `features_only` backbone) into the layer of `model`
    of the same name.

    Raises:
        WeightsError: a layer of the donor that `model` lacks or whose shapes differ (the
            weights need another variant of the backbone than the one `model` was built on).
    """
    for layer in donor.layers:
        if not layer.weights:
            continue
        try:
            model.get_layer(layer.name).set_weights(layer.get_weights())
        except ValueError as exc:
            raise WeightsError(
                f"the encoder of {model.name} has no layer {layer.name!r} of the shapes in the "
                f"weights of {donor.name} ({exc}); build it with backbone={donor.name!r}.") from None
