"""The 11 keras.applications recipes compute exactly what keras.applications computes.

Building a pair of ImageNet networks is most of the cost of this file, so the default tier
checks one network per family (ResNet v1 and v2, DenseNet, VGG) and the `slow` tier the
deeper ones, which run the same block code with other counts (their parameter counts are
also checked against the keras.applications figures of their metadata by test_zoo).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnbuilder
from cnnbuilder.model.weights import transfer_weights

APPLICATIONS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2",
    "densenet121": "DenseNet121", "densenet169": "DenseNet169", "densenet201": "DenseNet201",
    "vgg16": "VGG16", "vgg19": "VGG19",
}


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Random weights everywhere and random BatchNorm statistics, so equal outputs mean
    every weight landed in the right place."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.path.split("/")[-1]
            if name in ("moving_variance", "gamma"):
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name in ("moving_mean", "beta", "bias"):
                values.append(rng.normal(0.0, 0.1, shape))
            else:
                fan_in = np.prod(shape[:-1]) if len(shape) > 1 else 1
                values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])


DEFAULT_TIER = {"resnet50", "resnet50v2", "densenet121", "vgg16"}


@pytest.mark.parametrize("name", [
    name if name in DEFAULT_TIER else pytest.param(name, marks=pytest.mark.slow)
    for name in APPLICATIONS])
def test_same_parameters_and_outputs_as_keras_applications(name):
    """`build(name)` has the reference's parameter count and, given the reference's
    weights (random, with random BatchNorm statistics), computes the same outputs; the
    DenseNets also have the reference's layer names."""
    reference = getattr(keras.applications, APPLICATIONS[name])(weights=None)
    ours = cnnbuilder.build(name)
    if name.startswith("densenet"):
        assert_same_layer_names(ours, reference, getattr(keras.applications, APPLICATIONS[name]))
    assert ours.count_params() == reference.count_params()
    assert ours.count_params() == cnnbuilder.load_recipe(name).metadata["params"]
    assert ours.output_shape == reference.output_shape == (None, 1000)

    randomize(reference)
    transfer_weights(reference, ours)
    x = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    # Compare logits (softmax would hide differences in saturated classes).
    expected = np.asarray(_logits(reference)(x))
    got = np.asarray(_logits(ours)(x))
    scale = np.max(np.abs(expected))
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def assert_same_layer_names(ours: keras.Model, reference: keras.Model, constructor) -> None:
    """Every layer, in graph order, has the reference's type and, where keras.applications
    names it, the reference's name. Keras names the others itself (the input and the
    stem's two ZeroPadding2D: `zero_padding2d_<n>`, counting per session), so the names
    it fixes are those that a second build repeats."""
    again = constructor(weights=None)
    assert [type(l) for l in ours.layers] == [type(l) for l in reference.layers]
    fixed = [a.name == b.name for a, b in zip(reference.layers, again.layers)]
    assert len(fixed) - sum(fixed) == 3, [a.name for a, f in zip(reference.layers, fixed) if not f]
    names = [layer.name for layer in ours.layers]
    expected = [layer.name for layer in reference.layers]
    assert [n for n, f in zip(names, fixed) if f] == [n for n, f in zip(expected, fixed) if f]
    assert {"conv2_block1_0_bn", "conv2_block1_1_conv", "conv2_block1_concat", "pool2_conv",
            "conv5_block16_2_conv", "bn", "relu", "predictions"} <= set(names)


def _logits(model: keras.Model) -> keras.Model:
    """The model up to the classifier's pre-activation, sharing its weights."""
    head = model.layers[-1]
    head.activation = keras.activations.linear
    return model


# The metadata's counts are keras.applications' (test_same_parameters_and_outputs... asserts
# it), so the overrides are compared with them without building the reference again.
def test_densenet_block_override_gives_densenet169():
    model = cnnbuilder.build("densenet121", blocks=[6, 12, 32, 32])
    assert model.count_params() == cnnbuilder.load_recipe("densenet169").metadata["params"] == 14_307_880


def test_resnet_block_override_gives_resnet101():
    model = cnnbuilder.build("resnet50", blocks=[3, 4, 23, 3])
    assert model.count_params() == cnnbuilder.load_recipe("resnet101").metadata["params"] == 44_707_176


def test_growth_rate_override_changes_every_dense_layer():
    narrow = cnnbuilder.build("densenet121", growth_rate=12, include_top=False, input_shape=(32, 32, 3))
    # The stem has 2k = 24 channels; every dense layer adds k = 12; transitions halve.
    assert narrow.get_layer("conv2_block1_concat").output.shape[-1] == 24 + 12
    channels = 24
    for layers in (6, 12, 24):
        channels = (channels + layers * 12) // 2
    assert narrow.output_shape[-1] == channels + 16 * 12 == 384


def test_transfer_rejects_a_different_architecture():
    a = cnnbuilder.build("densenet_bc100_k12", depth=16, include_top=False)
    b = cnnbuilder.build("densenet_bc100_k12", depth=16, include_top=False, growth_rate=16)
    with pytest.raises(cnnbuilder.WeightsError, match="corresponds to"):
        transfer_weights(a, b)
