"""The model zoo: every shipped recipe is tested the day it is added.

`test_recipe` is parametrized over `list_recipes()` and builds each network as few times as
it can (building is most of the cost: a DenseNet-264 has 900 layers): once at the recipe's
smallest input (`metadata.min_input`, else its default input) for the parameter count and
one training step, at the default input only where the parameter count depends on the input
size (a `flatten` head), and, for recipes with a graph of their own, once more for
`features_only` plus a `.keras` load. A recipe that `extends` another and changes only its
numbers (`params`: depth, blocks, growth rate; see `numbers_only`) builds the same kinds of
layers wired the same way as its base, so its round trip and features are those of its base,
which is checked in full; its own count and training step are still checked here.
"""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
import yaml

import cnnbuilder
from cnnbuilder.model.builder import build, stage_outputs
from cnnbuilder.model.summary import layer_macs
from cnnbuilder.zoo import recipe_path

NAMES = cnnbuilder.list_recipes()


# Keys a recipe may set over its base and still build the same graph with other numbers.
NUMBERS_ONLY_KEYS = {"name", "extends", "description", "reference", "metadata", "params", "tune", "training"}


def numbers_only(name: str) -> bool:
    """True for a recipe that extends another and overrides only params (and metadata)."""
    own = yaml.safe_load(recipe_path(name).read_text())
    return "extends" in own and set(own) <= NUMBERS_ONLY_KEYS


@pytest.fixture
def free_memory():
    """Drop the models of a test at once: letting the cyclic garbage of 33 networks pile up
    doubles the peak memory and makes Python's own collections slower."""
    yield
    keras.backend.clear_session()
    gc.collect()


def small_shape(recipe) -> tuple:
    height, width, channels = recipe.default_input_shape
    size = recipe.metadata.get("min_input")
    return (size, size, channels) if size else (height, width, channels)


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Random moving statistics, so a round trip that lost them would change the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, variance.shape).astype("float32")])


def count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def test_the_zoo_has_the_networks_of_the_literature():
    expected = {
        "lenet5", "alexnet", "vgg16", "vgg19", "googlenet",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnet50v2", "resnet101v2", "resnet152v2", "resnext50_32x4d", "wide_resnet50_2",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain56",
        "densenet40_k12", "densenet100_k12", "densenet100_k24", "densenet_bc100_k12",
        "densenet_bc250_k24", "densenet_bc190_k40",
        "densenet121", "densenet161", "densenet169", "densenet201", "densenet264",
    }
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_metadata(name):
    """Reference, family, expected parameter count, default input and classes."""
    recipe = cnnbuilder.load_recipe(name)
    meta = recipe.metadata
    assert recipe.name == name
    assert recipe.reference.strip() and recipe.description.strip()
    assert recipe.family
    assert isinstance(meta.get("params"), int) and meta["params"] > 0
    assert meta.get("trainable_params", meta["params"]) <= meta["params"]
    assert len(meta["input_shape"]) == 3
    assert meta["classes"] >= 2
    if meta.get("min_input"):
        assert meta["min_input"] <= min(meta["input_shape"][:2])


@pytest.mark.usefixtures("free_memory")
@pytest.mark.parametrize("name", NAMES)
def test_recipe(name, tmp_path):
    """Parameters as declared; builds at a small input, of standard layers (no Lambda);
    one training step gives a finite
    loss and changes the weights; and (see the module docstring) the `.keras` file
    round-trips in safe mode with equal outputs and `features_only` gives every feature tap
    (the recipe's `features:`, else the stage ends) with its channels and stride."""
    recipe = cnnbuilder.load_recipe(name)
    meta = recipe.metadata
    shape = small_shape(recipe)
    model = build(recipe, input_shape=shape)
    assert model.name == name
    segmentation = recipe.task == "segmentation"  # per-pixel classes at the input's size
    assert model.output_shape == ((None, *shape[:2], recipe.default_classes) if segmentation
                                  else (None, recipe.default_classes))
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Lambda)]

    # Parameter count at the default input. With global pooling it does not depend on the
    # input size; a flatten head (LeNet, AlexNet, VGG) needs the default input.
    if shape != recipe.default_input_shape and any(s.block == "flatten" for s in recipe.default_plan.steps):
        reference = build(recipe)
    else:
        reference = model
    assert reference.count_params() == meta["params"], f"{name}: {reference.count_params():,} parameters"
    if "trainable_params" in meta:
        assert count(reference.trainable_weights) == meta["trainable_params"]
    del reference

    x = np.random.default_rng(1).uniform(0.0, 1.0, (2, *shape)).astype("float32")
    full = not numbers_only(name)
    if full:
        # .keras round trip, in safe mode (no Lambda layers, no custom objects).
        randomize_batchnorm(model)
        expected = np.asarray(model(x, training=False))
        assert np.isfinite(expected).all()
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
        np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, rtol=1e-5, atol=1e-6)
        del loaded

    # One training step (eager: tracing a graph of 900 layers costs more than running it).
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    kernel = model.trainable_weights[0]
    before = np.array(kernel)
    labels = np.array([0, 1])
    if segmentation:
        labels = np.broadcast_to(labels[:, None, None], (2, *shape[:2]))
    loss = model.train_on_batch(x, labels)
    assert np.isfinite(loss)
    assert not np.array_equal(np.array(kernel), before)
    del model
    if not full:
        return

    # features_only: one output per feature tap (the recipe's `features:`, else the end of
    # every stage), at the shapes the plan promises.
    features = build(recipe, input_shape=shape, features_only=True)
    plan = recipe.plan(input_shape=shape, include_top=False)
    taps = recipe.feature_taps(plan)
    assert len(features.outputs) == len(taps) >= 2
    info = stage_outputs(features)
    steps = {s.name: s for s in plan.steps}
    for tap, tensor, item in zip(taps, features.outputs, info):
        stage, end = tap.stage, steps[tap.step].output_shape
        assert tuple(tensor.shape[1:]) == tuple(end), stage
        assert item["channels"] == end[-1]
        assert isinstance(item["stride"], int) and item["stride"] >= 1, item
        # Valid padding may shrink a map further, never less (a decoder's stages grow again).
        assert segmentation or end[0] <= -(-shape[0] // item["stride"]), (stage, item)
    assert segmentation or [i["stride"] for i in info] == sorted(i["stride"] for i in info)


# Multiply-adds (conv and fc layers) at 224×224 against the published figures.
PUBLISHED_MACS = {
    # He et al. 2016, Table 1: 3.8×10⁹ FLOPs (multiply-adds) for the 50-layer net, in the
    # Caffe layout of the keras recipe (stride on the first 1×1 of a unit).
    "resnet50": 3.8e9,
    # DenseNet-121: 2.9 G as usually quoted (Huang et al. 2017, Fig. 3 plots 2.8-2.9 G).
    "densenet121": 2.9e9,
    # VGG-16: 15.5 G (e.g. torchvision's table, 15.47 GFLOPS).
    "vgg16": 15.5e9,
}


def total_macs(model: keras.Model) -> int:
    return sum(layer_macs(layer) for layer in model.layers)


@pytest.mark.usefixtures("free_memory")
@pytest.mark.parametrize("name", PUBLISHED_MACS)
def test_multiply_adds_match_the_published_figures(name):
    macs = total_macs(build(name))
    assert macs == pytest.approx(PUBLISHED_MACS[name], rel=0.05), f"{name}: {macs / 1e9:.2f} G"


def test_resnet50_with_the_stride_on_the_3x3_has_the_often_quoted_4_1_g():
    """The "4.1 G" of ResNet-50 is torchvision's layout (v1.5: the 3×3 strides); the keras
    layout (the paper's, stride on the 1×1) does fewer multiply-adds (3.86 G)."""
    v1_5 = {"extends": "resnet50", "name": "resnet50_v1_5",
            "defaults": {"convolutional": {"stride_on": "3x3"}}}
    macs = total_macs(build(v1_5))
    assert macs == pytest.approx(4.1e9, rel=0.05), f"{macs / 1e9:.2f} G"
    assert macs > PUBLISHED_MACS["resnet50"]


def test_stage_outputs_report_strides_not_size_ratios():
    """LeNet's valid convolutions shrink 32 → 28 → 14 → 10 → 5: strides 2 and 4, not 32/5."""
    features = build("lenet5", features_only=True, input_shape=(32, 32, 1))
    assert [(i["channels"], i["stride"]) for i in stage_outputs(features)] == [(6, 2), (16, 4)]
    features = build("resnet50", features_only=True, input_shape=(64, 64, 3))
    assert [(i["channels"], i["stride"]) for i in stage_outputs(features)] == [
        (64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)]
