"""Feature taps: a recipe's `features:` list, what `build(..., features_only=True)` returns
and what `feature_info` reports, against timm's `features_only` / `feature_info`.

The recipe tests are pure Python (the fast tier). The timm comparisons import torch and timm
(`block_triton()` first: other test modules imported TensorFlow); timm's networks are made
on PyTorch's meta device (no weights allocated) for their feature_info, and with random
weights (converted by cnnbuilder's own converter through the Hugging Face cache layout, as
tests/test_pytorch_weights.py does) where the feature maps themselves are compared.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from cnnbuilder import RecipeError, load_recipe
from helpers import TINY_RECIPE, write

# Every recipe timm has, with timm's model name: its feature_info must be ours.
TIMM = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
    "resnet101": "resnet101", "resnet152": "resnet152", "resnet50_tv": "resnet50",
    "resnet101_tv": "resnet101", "resnet152_tv": "resnet152",
    "resnext50_32x4d": "resnext50_32x4d", "wide_resnet50_2": "wide_resnet50_2",
    "densenet121": "densenet121", "densenet161": "densenet161", "densenet169": "densenet169",
    "densenet201": "densenet201", "vgg16": "vgg16", "vgg19": "vgg19",
}


def taps_of(recipe, **params):
    recipe = load_recipe(recipe)
    return [(t.name, t.step, t.stage)
            for t in recipe.feature_taps(recipe.plan(include_top=False, **params))]


def plan_info(name: str, size: int = 224) -> list[tuple[int, int]]:
    """(channels, reduction) of each tap from the plan's shapes at a size the network
    divides exactly (every ImageNet recipe here halves 224 exactly)."""
    recipe = load_recipe(name)
    plan = recipe.plan(input_shape=(size, size, 3), include_top=False)
    steps = {step.name: step for step in plan.steps}
    shapes = [steps[tap.step].output_shape for tap in recipe.feature_taps(plan)]
    return [(shape[-1], size // shape[0]) for shape in shapes]


def timm_info(model_name: str) -> list[tuple[int, int]]:
    from torch_reference import block_triton

    block_triton()
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # the architecture only: no weights are allocated
        info = timm.create_model(model_name, pretrained=False, features_only=True).feature_info
    return list(zip(info.channels(), info.reduction()))


# ----------------------------------------------------------------------- recipes (fast)


@pytest.mark.fast
def test_declared_taps_are_timms_modules():
    # timm's resnet: act1, layer1..layer4.
    assert taps_of("resnet50") == [("stem_activation1", "stem_activation1", "stem"),
                                   ("conv2", "conv2_block3", "conv2"), ("conv3", "conv3_block4", "conv3"),
                                   ("conv4", "conv4_block6", "conv4"), ("conv5", "conv5_block3", "conv5")]
    # timm's densenet: norm0, denseblock1..3 (before their transitions), norm5.
    assert [step for _, step, _ in taps_of("densenet121")] == [
        "conv1_relu", "conv2", "conv3", "conv4", "relu"]
    # timm's vgg: the last conv (ReLU) before each max pool, then the last pool.
    assert [step for _, step, _ in taps_of("vgg16")] == [
        "block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool1"]
    # `last:` follows the params: one convolution per block.
    assert [step for _, step, _ in taps_of("vgg16", convs=[1, 1, 1, 1, 1])][:3] == [
        "block1_conv1", "block2_conv1", "block3_conv1"]
    # The _tv variants and deeper networks inherit the taps with `extends`.
    assert taps_of("resnet152_tv")[0] == ("stem_activation1", "stem_activation1", "stem")
    assert [step for _, step, _ in taps_of("densenet201")][1:4] == ["conv2", "conv3", "conv4"]


@pytest.mark.fast
def test_without_features_the_taps_are_the_stage_ends():
    assert taps_of("lenet5") == [("c1s2", "c1s2_pool1", "c1s2"), ("c3s4", "c3s4_pool1", "c3s4")]
    assert [name for name, _, _ in taps_of("resnet20")] == ["stage1", "stage2", "stage3"]


@pytest.mark.fast
def test_recipes_timm_lacks_have_one_tap_per_reduction():
    """googlenet, alexnet, the keras ResNetV2s and the CIFAR DenseNets: one tap per distinct
    reduction, each the last output at it (docs/pretrained.md)."""
    expected = {
        "googlenet": [(64, 2), (192, 4), (480, 8), (832, 16), (1024, 32)],  # Szegedy et al., Table 1
        "googlenet_tv": [(64, 2), (192, 4), (480, 8), (832, 16), (1024, 32)],
        "resnet50v2": [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)],
    }
    for name, info in expected.items():
        assert plan_info(name) == info, name
    # AlexNet's valid convolutions and pools do not halve exactly: torchvision's sizes
    # (55, 27, 13, 6 at 224), i.e. reductions 4, 8, 16, 32.
    recipe = load_recipe("alexnet")
    steps = {step.name: step for step in recipe.default_plan.steps}
    assert [steps[t.step].output_shape for t in recipe.feature_taps()] == [
        (55, 55, 64), (27, 27, 192), (13, 13, 256), (6, 6, 256)]
    # DenseNet-BC-100 (k=12): 2k + 16·12 = 216 → θ → 108 + 192 = 300 → 150 + 192 = 342 channels.
    assert plan_info("densenet_bc100_k12", 32) == [(216, 1), (300, 2), (342, 4)]


@pytest.mark.fast
def test_plain_names_steps_and_stages():
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe["features"] = ["stem_activation1", {"step": "s1_block1"}, {"stage": "s2", "last": "convolutional"}]
    assert taps_of(recipe) == [("stem_activation1", "stem_activation1", "stem"),
                               ("s1_block1", "s1_block1", "s1"),
                               ("s2.convolutional", "s2_block1", "s2")]
    recipe["features"] = ["stem", {"stage": "s2", "index": -1}]
    assert taps_of(recipe) == [("stem", "stem_activation1", "stem"), ("s2[-1]", "s2_block1", "s2")]


BAD = [
    ("[stem_activaton1, s2]", "not a step of this network", "Did you mean 'stem_activation1'"),
    ("[head_fc1]", "is in the head", None),
    ("[s2, stem_activation1]", "network order", None),
    ("[s1, s1_block1]", "already tapped", None),
    ("[{stage: s2, last: pool}]", "has no 'pool' step", None),
    ("[{stage: s2, index: 5}]", "out of range", None),
    ("[{stage: s9}]", "not a stage", None),
    ("[{step: s1_block1, last: conv}]", "a feature tap is a step or stage name", None),
    ("[{stag: s1}]", "a feature tap is a step or stage name", "Did you mean 'stage'"),
    ("[]", "non-empty list", None),
    ("s1", "non-empty list", None),
]


@pytest.mark.fast
@pytest.mark.parametrize("features, message, hint", BAD)
def test_bad_features_name_the_file_and_line(tmp_path, features, message, hint):
    path = write(tmp_path, "net.yaml", TINY_RECIPE + f"features: {features}\n")
    line = len(TINY_RECIPE.splitlines()) + 1
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert text.startswith(f"{path}, line {line}"), text
    assert "features" in text and message in text
    if hint:
        assert hint in text


@pytest.mark.fast
def test_a_name_that_is_a_step_and_a_stage_is_ambiguous(tmp_path):
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe["stages"][1]["blocks"][0]["convolutional"]["name"] = "s2"  # step s2 in stage s2
    recipe["stages"][1]["blocks"].append({"bn": None})
    recipe["features"] = ["s2"]
    with pytest.raises(RecipeError, match=re.escape("write {step: s2} or {stage: s2}")):
        load_recipe(recipe)
    recipe["features"] = [{"step": "s2"}, {"stage": "s2"}]
    assert [step for _, step, _ in taps_of(recipe)] == ["s2", "s2_bn1"]


def test_params_that_remove_a_tap_fail_only_features_only_builds():
    """A tap that a param override removes (here the second unit of s1) does not stop a
    classifier from building; a backbone is refused before any layer is built."""
    import cnnbuilder

    recipe = yaml.safe_load(TINY_RECIPE)
    recipe["params"]["units"] = [2, 1]
    recipe["features"] = [{"stage": "s1", "index": 1}, "s2"]
    assert len(cnnbuilder.build(recipe, features_only=True).outputs) == 2
    assert cnnbuilder.build(recipe, units=[1, 1]).output_shape == (None, 4)
    with pytest.raises(RecipeError, match="index 1 is out of range") as info:
        cnnbuilder.build(recipe, units=[1, 1], features_only=True)
    assert "field features[0].index" in str(info.value)


# ------------------------------------------------------------------------- against timm


@pytest.mark.slow
def test_channels_and_reductions_are_timms_for_every_recipe_timm_has():
    for recipe, model_name in TIMM.items():
        assert plan_info(recipe) == timm_info(model_name), recipe


@pytest.mark.parametrize("recipe", ["resnet50", "densenet121", "vgg16"])
def test_feature_info_of_the_built_model_is_timms(recipe):
    import cnnbuilder

    model = cnnbuilder.build(recipe, features_only=True)
    info = cnnbuilder.feature_info(model)
    assert [(i["channels"], i["reduction"]) for i in info] == timm_info(TIMM[recipe])
    taps = load_recipe(recipe).feature_taps()
    assert [i["module"] for i in info] == [t.name for t in taps]
    assert [i["layer"] for i in info] == [model.get_layer(i["layer"]).name for i in info]
    assert info[0]["stage"] == ("block1" if recipe == "vgg16" else "stem")
    # out_indices index the taps as timm's.
    picked = cnnbuilder.build(recipe, features_only=True, out_indices=(1, -1))
    assert cnnbuilder.feature_info(picked) == [info[1], info[-1]]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, source", [("resnet18", "timm:resnet18.a1_in1k"),
                                            ("densenet121", "timm:densenet121.tv_in1k")])
def test_feature_maps_equal_timms_features_only(caches, recipe, source):
    """With the weights of a random timm network, every feature map equals timm's
    `features_only` model's (NCHW there, NHWC here) within 1e-4."""
    from torch_reference import block_triton, images, randomize, save_hf_snapshot

    block_triton()
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    import cnnbuilder

    size = 64
    reference = randomize(timm.create_model(recipe, pretrained=False), size=size)
    save_hf_snapshot(reference, caches / "hf", "timm/" + source.split(":")[1])
    features = timm.create_model(recipe, pretrained=False, features_only=True)
    # timm's FeatureListNet flattens `features.denseblock1` to `features_denseblock1`.
    state = {k.replace("features.", "features_", 1) if recipe.startswith("densenet") else k: v
             for k, v in reference.state_dict().items()}
    missing, _ = features.load_state_dict(state, strict=False)
    assert not missing
    features.eval()
    model = cnnbuilder.build(recipe, weights=source, features_only=True,
                             input_shape=(size, size, 3))
    x = images(size)
    with torch.no_grad():
        theirs = [t.numpy().transpose(0, 2, 3, 1) for t in features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))]
    ours = [np.asarray(t) for t in model(x, training=False)]
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert [(i["channels"], i["reduction"]) for i in cnnbuilder.feature_info(model)] == list(
        zip(features.feature_info.channels(), features.feature_info.reduction()))
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert np.abs(b).max() > 0.1, index
        difference = np.abs(a - b).max()
        assert difference < 1e-4, f"feature map {index}: max |difference| {difference:.2e}"
