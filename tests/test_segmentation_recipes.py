"""Segmentation recipes (issue 25, networks): the `task:` key, the decoder blocks (`upsample`,
`transition_up`, `skip`), the dense block's `output: new` and the transition's `pool: max`,
and the shipped U-Net and FC-DenseNet recipes.

The recipe-language tests are in the fast tier (no TensorFlow); the ones that build import
Keras inside the test. The FC-DenseNet and U-Net parameter counts are checked against an
independent count of the architecture as the papers and the authors' code describe it.
"""

from __future__ import annotations

import pytest

from cnnbuilder import RecipeError, load_recipe
from cnnbuilder.recipe.training import training_config

fast = pytest.mark.fast


def net(stages, *, head=None, **extra) -> dict:
    """A small dict recipe of `stages` (a list of (name, blocks))."""
    recipe = {"name": "seg", "task": "segmentation",
              "metadata": {"input_shape": [16, 16, 3], "classes": 3},
              "stages": [{"name": name, "blocks": blocks} for name, blocks in stages]}
    if head is not None:
        recipe["head"] = head
    recipe.update(extra)
    return recipe


ENCODER = [("enc1", [{"conv": 4}]), ("enc2", [{"pool": "max"}, {"conv": 6}])]
HEAD = [{"conv": {"filters": "${classes}", "kernel": 1, "activation": "${classifier_activation}"}}]


# ----------------------------------------------------------------------------- task


@fast
def test_task_defaults_to_classification_and_segmentation_recipes_say_so():
    assert load_recipe("resnet20").task == "classification"
    for name in ("unet", "fcdensenet56", "fcdensenet67", "fcdensenet103"):
        assert load_recipe(name).task == "segmentation", name  # the children inherit it
    assert load_recipe(net(ENCODER)).task == "segmentation"


@fast
def test_a_bad_task_names_the_line_and_the_choices(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntask: segmentaton\nstages:\n  - {name: s1, blocks: [{conv: 4}]}\n")
    with pytest.raises(RecipeError, match=r"bad.yaml, line 2.*field task.*'segmentaton'.*"
                                          r"classification, segmentation.*Did you mean 'segmentation'"):
        load_recipe(path)


# ----------------------------------------------------------------------------- skip errors


@fast
def test_a_skip_to_a_stage_that_does_not_exist_names_the_line_and_a_close_name(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntask: segmentation\nmetadata: {input_shape: [16, 16, 3]}\nstages:\n"
                    "  - name: down1\n    blocks: [{conv: 4}]\n"
                    "  - name: up1\n    blocks:\n      - conv: 4\n      - skip: donw1\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "s.yaml, line 10" in message and "'donw1'" in message
    assert "Did you mean 'down1'" in message and "Stages before it: down1, up1" in message


@fast
def test_a_skip_to_a_later_stage_is_refused():
    recipe = net([("a", [{"conv": 4}, {"skip": "b"}]), ("b", [{"conv": 4}])])
    with pytest.raises(RecipeError, match=r"reads 'b', which is computed after it"):
        load_recipe(recipe)


@fast
def test_a_skip_into_its_own_unfinished_stage_is_refused_but_a_named_step_is_read():
    with pytest.raises(RecipeError, match=r"reads 'a', which is computed after it"):
        load_recipe(net([("a", [{"conv": 4}, {"skip": "a"}, {"conv": 4}])]))
    plan = load_recipe(net([("a", [{"conv": {"filters": 4, "name": "first"}}, {"conv": 5},
                                   {"skip": "first"}])])).default_plan
    assert plan.steps[-1].output_shape == (16, 16, 9)


@fast
def test_a_skip_whose_resolution_does_not_match_names_both_shapes():
    recipe = net([*ENCODER, ("dec", [{"skip": "enc1"}])])
    with pytest.raises(RecipeError, match=r"joins the current \(8, 8, 6\) tensor with 'enc1'"
                                          r"'s output \(16, 16, 4\).*height 8 vs 16"):
        load_recipe(recipe)


@fast
def test_an_input_size_the_decoder_cannot_restore_is_found_before_any_layer():
    # 40 -> 20 -> 10 -> 5 -> 2 and back up to 4: the skip from down4 (5×5) cannot join.
    with pytest.raises(RecipeError, match=r"unet.yaml.*\(4, 4, 512\).*'down4'.*\(5, 5, 512\)"):
        load_recipe("unet").plan(input_shape=(40, 40, 1))


@fast
def test_skip_add_needs_equal_channels_and_crop_a_larger_known_source():
    with pytest.raises(RecipeError, match=r"merge: add needs equal channels.*has 6.*has 4"):
        load_recipe(net([*ENCODER, ("dec", [{"upsample": 2}, {"skip": {"from": "enc1", "merge": "add"}}])]))
    with pytest.raises(RecipeError, match=r"cannot crop 'enc2'.*it is smaller"):
        load_recipe(net([*ENCODER, ("dec", [{"upsample": 2}, {"skip": {"from": "enc2", "crop": True}}])]))
    with pytest.raises(RecipeError, match=r"crop: true needs a fixed input size"):
        load_recipe(net([*ENCODER, ("dec", [{"upsample": 2}, {"skip": {"from": "enc1", "crop": True}}])])
                    ).plan(input_shape=(None, None, 3))


@fast
def test_upsample_and_transition_up_fields_are_checked():
    with pytest.raises(RecipeError, match=r"takes `filters` and `kernel` only with mode: transposed"):
        load_recipe(net([("a", [{"upsample": {"filters": 8}}])]))
    with pytest.raises(RecipeError, match=r"field stages\[0\].blocks\[0\].upsample.mode.*bilinear \| nearest "
                                          r"\| transposed.*Did you mean|field stages\[0\].blocks\[0\].upsample.mode"):
        load_recipe(net([("a", [{"upsample": {"mode": "bicubic"}}])]))
    with pytest.raises(RecipeError, match=r"transition_up.filters"):
        load_recipe(net([("a", [{"transition_up": {"filters": 0}}])]))


@fast
def test_decoder_shapes_follow_factor_filters_and_new_only_dense_blocks():
    plan = load_recipe(net([
        ("a", [{"conv": 8}, {"pool": "max"}]),
        ("b", [{"upsample": {"factor": 2, "mode": "transposed", "filters": 5}},
               {"transition_up": 7}, {"upsample": {"factor": 3, "mode": "nearest"}},
               {"dense": {"layers": 3, "growth_rate": 4, "output": "new"}},
               {"dense": {"layers": 2, "growth_rate": 4}},
               {"transition": {"compression": 1.0, "pool": "max"}}])])).default_plan
    assert [s.output_shape for s in plan.steps] == [
        (16, 16, 8), (8, 8, 8), (16, 16, 5), (32, 32, 7), (96, 96, 7), (96, 96, 12), (96, 96, 20),
        (48, 48, 20)]


@fast
def test_fcdensenet_training_is_jegou_section_4():
    recipe = load_recipe("fcdensenet103")
    config = training_config(recipe.training)
    assert (config.optimizer, config.learning_rate, config.weight_decay, config.batch_size) == (
        "rmsprop", 1e-3, 1e-4, 3)
    assert (config.schedule, config.step_factor) == ("exponential", 0.995)
    assert load_recipe("fcdensenet56").training == recipe.training  # inherited
    unet = training_config(load_recipe("unet").training)
    assert (unet.optimizer, unet.momentum, unet.batch_size) == ("sgd", 0.99, 1)


# ----------------------------------------------------------------------------- parameter counts


def fcdensenet_count(growth: int, layers: list[int], classes: int, first: int = 48) -> tuple[int, int]:
    """(all, trainable) parameters of FC-DenseNet as the authors' code (SimJeg/FC-DenseNet,
    FC-DenseNet.py and layers.py) builds it: BN (4 arrays a channel: beta, gamma, mean,
    inv_std; 2 trainable) - ReLU - conv (with bias) per layer; transition down BN-ReLU-1×1
    conv of as many filters; transition up a 3×3 deconvolution (bias) of k·L filters; a
    final 1×1 conv."""
    total = bn = 0

    def bn_relu_conv(c_in, n, k):
        nonlocal total, bn
        bn += c_in
        total += 4 * c_in + k * k * c_in * n + n

    total += 9 * 3 * first + first
    channels, skips, pools = first, [], (len(layers) - 1) // 2
    for i in range(pools):
        for _ in range(layers[i]):
            bn_relu_conv(channels, growth, 3)
            channels += growth
        skips.append(channels)
        bn_relu_conv(channels, channels, 1)
    for _ in range(layers[pools]):
        bn_relu_conv(channels, growth, 3)
        channels += growth
    new = growth * layers[pools]
    for i in range(pools):
        total += 9 * new * new + new  # TU: n_filters_keep = k · L of the block below
        channels = new + skips[-1 - i]
        for _ in range(layers[pools + 1 + i]):
            bn_relu_conv(channels, growth, 3)
            channels += growth
        new = growth * layers[pools + 1 + i]
    total += channels * classes + classes
    return total, total - 2 * bn


def unet_count(in_channels: int, classes: int, width: int = 64) -> int:
    """Ronneberger et al. 2015, Fig. 1: two 3×3 convs per level (64 ... 1024), 2×2
    up-convolutions halving the channels, a final 1×1 conv; every conv with a bias."""
    def conv(c_in, c_out, k):
        return k * k * c_in * c_out + c_out

    total, c = 0, in_channels
    for level in range(5):
        w = width * 2 ** level
        total += conv(c, w, 3) + conv(w, w, 3)
        c = w
    for level in reversed(range(4)):
        w = width * 2 ** level
        total += conv(c, w, 2) + conv(2 * w, w, 3) + conv(w, w, 3)
        c = w
    return total + conv(c, classes, 1)


FCDENSENETS = {  # name: growth rate, layers per block, the paper's count (millions, Table 3)
    "fcdensenet56": (12, [4] * 11, 1.5),
    "fcdensenet67": (16, [5] * 11, 3.5),
    "fcdensenet103": (16, [4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4], 9.4),
}


@pytest.mark.parametrize("name", FCDENSENETS)
def test_fcdensenet_parameters_are_the_architectures_and_the_papers(name):
    import numpy as np

    import cnnbuilder

    growth, layers, paper = FCDENSENETS[name]
    model = cnnbuilder.build(name, input_shape=(32, 32, 3), classes=11)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert (model.count_params(), trainable) == fcdensenet_count(growth, layers, 11)
    # The authors' code counts every parameter array (FC-DenseNet.py, `summary`), as
    # count_params does. FC-DenseNet56 is the exception: its stated configuration gives 1.4M
    # where the paper prints 1.5M (docs/segmentation.md; the recipe's metadata.source).
    expected = 1.4 if name == "fcdensenet56" else paper
    assert round(model.count_params() / 1e6, 1) == expected
    assert load_recipe(name).metadata["params"] == model.count_params()


def test_unet_parameters_follow_the_papers_channels():
    import cnnbuilder

    model = cnnbuilder.build("unet", input_shape=(32, 32, 1), classes=2)
    assert model.count_params() == unet_count(1, 2) == load_recipe("unet").metadata["params"]
    assert cnnbuilder.build("unet", input_shape=(32, 32, 3), classes=5, width=8).count_params() == unet_count(3, 5, 8)


# ----------------------------------------------------------------------------- building


@pytest.mark.parametrize("name, params, shapes", [
    ("unet", {"width": 4}, [(32, 32, 1), (48, 80, 1)]),
    ("fcdensenet56", {"growth_rate": 2}, [(32, 32, 3), (64, 96, 3)]),
])
def test_per_pixel_probabilities_at_the_inputs_size(name, params, shapes):
    import numpy as np

    import cnnbuilder

    for shape in shapes:
        model = cnnbuilder.build(name, input_shape=shape, classes=5, **params)
        assert model.output_shape == (None, *shape[:2], 5)
        y = np.asarray(model(np.random.default_rng(0).uniform(size=(1, *shape)).astype("float32")))
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)  # a softmax per pixel
    # Without the top: the decoder's last feature map, of any size.
    features = cnnbuilder.build(name, include_top=False, input_shape=(None, None, shapes[0][-1]), **params)
    last = load_recipe(name).plan(include_top=False, **params).steps[-1].output_shape
    assert features.output_shape == (None, None, None, last[-1])


def _weights_by_name(source, target, prefixes):
    values = {layer.name: layer.get_weights() for layer in source.layers}
    for layer in target.layers:
        if layer.weights and layer.name.startswith(prefixes):
            layer.set_weights(values[layer.name])


def test_dense_output_new_is_the_blocks_new_maps_and_transition_pool_max():
    import keras
    import numpy as np

    import cnnbuilder

    def recipe(output, pool):
        return net([("a", [{"dense": {"layers": 3, "growth_rate": 5, "bottleneck": False,
                                      "output": output, "name": "db"}},
                           {"transition": {"compression": 1.0, "pool": pool, "name": "td"}}])],
                   stem=[{"conv": {"filters": 7, "name": "conv1"}}])

    full = cnnbuilder.build(recipe("all", "avg"), include_top=False, input_shape=(8, 8, 3))
    new = cnnbuilder.build(recipe("new", "max"), include_top=False, input_shape=(8, 8, 3))
    assert new.output_shape == (None, 4, 4, 15) and full.output_shape == (None, 4, 4, 22)
    _weights_by_name(full, new, ("conv1", "db"))
    x = np.random.default_rng(2).uniform(size=(2, 8, 8, 3)).astype("float32")
    block_all = keras.Model(full.input, full.get_layer("db_block3_concat").output)
    block_new = keras.Model(new.input, new.get_layer("db_new_concat").output)
    np.testing.assert_allclose(np.asarray(block_new(x)), np.asarray(block_all(x))[..., 7:], rtol=1e-5, atol=1e-6)
    assert isinstance(new.get_layer("td_pool"), keras.layers.MaxPooling2D)
    assert isinstance(full.get_layer("td_pool"), keras.layers.AveragePooling2D)


def test_skip_concatenates_adds_and_crops_the_named_output():
    import keras
    import numpy as np

    import cnnbuilder

    x = np.random.default_rng(3).uniform(size=(1, 8, 8, 3)).astype("float32")
    model = cnnbuilder.build(net([("enc", [{"conv": {"filters": 4, "name": "e"}}]),
                                  ("dec", [{"conv": {"filters": 4, "name": "d"}},
                                           {"skip": {"from": "enc", "merge": "add", "name": "join"}},
                                           {"skip": {"from": "e", "name": "cat"}}])]),
                             include_top=False, input_shape=(8, 8, 3))
    e = np.asarray(keras.Model(model.input, model.get_layer("e").output)(x))
    d = np.asarray(keras.Model(model.input, model.get_layer("d").output)(x))
    np.testing.assert_allclose(np.asarray(model(x)), np.concatenate([d + e, e], -1), rtol=1e-5, atol=1e-6)

    cropped = cnnbuilder.build(net([("enc", [{"conv": {"filters": 2, "name": "e"}}]),
                                    ("dec", [{"conv": {"filters": 2, "padding": "valid", "name": "d"}},
                                             {"skip": {"from": "enc", "crop": True, "name": "cat"}}])]),
                               include_top=False, input_shape=(8, 8, 3))
    assert cropped.output_shape == (None, 6, 6, 4)
    e = np.asarray(keras.Model(cropped.input, cropped.get_layer("e").output)(x))
    np.testing.assert_allclose(np.asarray(cropped(x))[..., 2:], e[:, 1:7, 1:7], rtol=1e-5, atol=1e-6)


def test_upsample_modes_and_transition_up_build_what_they_promise():
    import keras
    import numpy as np

    import cnnbuilder

    model = cnnbuilder.build(net([("a", [{"upsample": {"mode": "nearest", "name": "near"}},
                                         {"upsample": {"mode": "transposed", "filters": 3, "name": "tconv"}},
                                         {"transition_up": {"name": "tu"}}])]),
                             include_top=False, input_shape=(4, 4, 2))
    assert model.output_shape == (None, 32, 32, 3)
    assert model.get_layer("tconv").kernel.shape == (2, 2, 3, 2)  # kernel = factor, 2 -> 3 channels
    assert model.get_layer("tu_conv").kernel.shape == (3, 3, 3, 3)
    x = np.arange(32, dtype="float32").reshape(1, 4, 4, 2)
    near = np.asarray(keras.Model(model.input, model.get_layer("near").output)(x))
    np.testing.assert_array_equal(near, x.repeat(2, axis=1).repeat(2, axis=2))


def test_memory_efficient_dense_block_with_output_new_computes_the_same():
    import numpy as np

    import cnnbuilder

    def recipe(efficient):
        return net([("a", [{"dense": {"layers": 2, "growth_rate": 3, "output": "new", "name": "db",
                                      "memory_efficient": efficient}}])])

    plain = cnnbuilder.build(recipe(False), include_top=False, input_shape=(8, 8, 3))
    efficient = cnnbuilder.build(recipe(True), include_top=False, input_shape=(8, 8, 3))
    assert efficient.output_shape == plain.output_shape == (None, 8, 8, 6)
    efficient.set_weights(plain.get_weights())
    x = np.random.default_rng(4).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(efficient(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- backbones


@fast
def test_a_backbone_without_stages_or_reductions_a_decoder_needs_is_refused(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("name: flat\nstem: [{conv: 8}]\nhead: [{global_pool: avg}, {fc: 10}]\n")
    decoder = tmp_path / "dec.yaml"
    decoder.write_text(f"name: dec\ntask: segmentation\nbackbone: {flat}\n"
                       "stages: [{name: d, blocks: [{upsample: 2}]}]\n")
    with pytest.raises(RecipeError, match=r"dec.yaml, line 3, field backbone: backbone '.*flat.yaml' "
                                          r"has no stages"):
        load_recipe(decoder)
    # resnet20's feature maps are at /1, /2 and /4: the FPN reads /16 too.
    with pytest.raises(RecipeError, match=r"fpn.yaml.*reads 'backbone_r16'.*The encoder's feature "
                                          r"maps: backbone_r1, backbone_r2, backbone_r4"):
        load_recipe("fpn").plan(backbone="resnet20", input_shape=(32, 32, 3))
    with pytest.raises(RecipeError, match=r"backbone='resnet34': resnet20 has its own encoder and no `backbone:`"):
        load_recipe("resnet20").plan(backbone="resnet34")
    with pytest.raises(RecipeError, match=r"backbone='resnet3': backbone 'resnet3'"):
        load_recipe("unet_backbone").plan(backbone="resnet3")


@fast
def test_a_bad_backbone_value_names_its_line(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("name: b\ntask: segmentation\nbackbone: [resnet34]\nstages: [{name: d, blocks: [{upsample: 2}]}]\n")
    with pytest.raises(RecipeError, match=r"b.yaml, line 3, field backbone: expected a recipe name"):
        load_recipe(path)
    path.write_text("name: b\nbackbone: resnet34\nstages: [{name: d, blocks: [{upsample: 2}]}]\n")
    with pytest.raises(RecipeError, match=r"field backbone: a backbone: is for a decoder.*task: segmentation"):
        load_recipe(path)


@fast
def test_the_decoder_reads_the_encoders_maps_by_reduction():
    plan = load_recipe("unet_backbone").plan(input_shape=(64, 64, 3), backbone="resnet18")
    assert plan.backbone == "resnet18"
    assert [(t.name, t.shape) for t in plan.encoder] == [
        ("backbone_r2", (32, 32, 64)), ("backbone_r4", (16, 16, 64)), ("backbone_r8", (8, 8, 128)),
        ("backbone_r16", (4, 4, 256)), ("backbone_r32", (2, 2, 512))]
    assert plan.steps[0].input_shape == (2, 2, 512)  # the decoder starts from the deepest
    assert plan.steps[-1].output_shape == (64, 64, 2)


def test_unet_over_a_backbone_loads_its_torchvision_weights(tmp_path, monkeypatch):
    """build("unet", backbone=..., weights="torchvision") builds unet_backbone over the
    backbone, with the weights a features_only build of the backbone loads (torch.hub's
    cache holding a state dict, offline)."""
    from torch_reference import block_triton, save_torchvision

    block_triton()  # TensorFlow is loaded: triton's LLVM would crash beside it
    torchvision = pytest.importorskip("torchvision")
    import numpy as np

    import cnnbuilder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNNBUILDER_OFFLINE", "1")
    save_torchvision(torchvision.models.resnet18(), tmp_path, "resnet18-f37072fd.pth")
    model = cnnbuilder.build("unet", backbone="resnet18", weights="torchvision", classes=3,
                             input_shape=(32, 32, 3))
    assert model.name == "unet_backbone" and model.output_shape == (None, 32, 32, 3)
    encoder = cnnbuilder.build("resnet18", features_only=True, weights="torchvision", input_shape=(32, 32, 3))
    loaded = [layer for layer in encoder.layers if layer.weights]
    assert len(loaded) > 30
    for layer in loaded:
        for theirs, ours in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    # The encoder's outputs are the backbone's feature maps, the decoder's on top.
    x = np.random.default_rng(5).normal(size=(1, 32, 32, 3)).astype("float32")
    import keras

    deepest = keras.Model(model.input, model.get_layer(encoder.outputs[-1]._keras_history.operation.name).output)
    np.testing.assert_allclose(np.asarray(deepest(x)), np.asarray(encoder(x)[-1]), rtol=1e-5, atol=1e-5)


def test_backbone_decoders_count_and_shape():
    import numpy as np

    import cnnbuilder

    model = cnnbuilder.build("unet_backbone", classes=1, input_shape=(64, 64, 3))
    # segmentation_models.pytorch's Unet("resnet34", classes=1): 24,436,369 parameters
    # (PyTorch counts no BatchNorm statistics: the trainable ones here).
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 24_436_369
    fpn = cnnbuilder.build("fpn", backbone="resnet18", classes=4, input_shape=(64, 96, 3))
    assert fpn.output_shape == (None, 64, 96, 4)
    assert cnnbuilder.build("fpn", backbone="resnet18", include_top=False).output_shape == (None, None, None, 128)


def test_show_counts_the_encoder_in_one_row_and_the_up_convolutions_multiply_adds():
    import keras

    import cnnbuilder
    from cnnbuilder.model.summary import layer_macs, summarize

    plan = load_recipe("fpn").plan(backbone="resnet18", input_shape=(64, 64, 3))
    model = cnnbuilder.build("fpn", backbone="resnet18", input_shape=(64, 64, 3))
    rows = summarize(model, plan)
    assert rows[0].name == "encoder" and rows[0].output_shape == (2, 2, 512)
    assert rows[0].params == cnnbuilder.build("resnet18", features_only=True, input_shape=(64, 64, 3)).count_params()
    assert [r.name for r in rows[1:]] == [*plan.stages, "head"]
    assert sum(r.params for r in rows) == model.count_params()
    # A 2×2 stride-2 up-convolution: each of the 4×4×3 inputs meets 2×2×5 weights.
    inputs = keras.Input((4, 4, 3))
    layer = keras.layers.Conv2DTranspose(5, 2, strides=2)
    layer(inputs)
    assert layer_macs(layer) == 4 * 4 * 3 * 2 * 2 * 5


def test_cli_show_prints_the_task_and_refuses_a_bad_skip_with_exit_2(capsys, tmp_path):
    from cnnbuilder.cli import main

    assert main(["show", "unet", "--set", "width=4", "--input-shape", "32,32,1", "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "task segmentation: output (32, 32, 3), a class probability per pixel" in out
    assert main(["show", "resnet20"]) == 0
    assert "task" not in capsys.readouterr().out.split("└")[-1]  # a classifier says nothing
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntask: segmentation\nstages:\n  - name: down\n    blocks: [{conv: 4}]\n"
                   "  - name: up\n    blocks: [{skip: dwn}]\n")
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml, line 7" in err and "Did you mean 'down'" in err and "Traceback" not in err


@fast
def test_a_segmentation_head_must_end_at_the_inputs_size_with_the_classes():
    half = net(ENCODER, head=HEAD)  # ends at 8×8
    with pytest.raises(RecipeError, match=r"field head\[0\].conv: a segmentation network gives 3 class "
                                          r"scores per pixel at the input's size, \(16, 16, 3\); its last "
                                          r"block \(head_conv1\) gives \(8, 8, 3\)"):
        load_recipe(half)
    full = net([*ENCODER, ("up", [{"upsample": 2}])], head=HEAD)
    assert load_recipe(full).plan(classes=7).steps[-1].output_shape == (16, 16, 7)
    with pytest.raises(RecipeError, match=r"gives \(16, 16, 4\)"):
        load_recipe(net([*ENCODER, ("up", [{"upsample": 2}])], head=[{"conv": 4}]))


def test_feature_info_of_a_decoder_counts_its_upsampling_down_to_the_input():
    import cnnbuilder

    model = cnnbuilder.build("unet", input_shape=(32, 32, 1), classes=2, width=2, features_only=True)
    info = cnnbuilder.feature_info(model)
    assert [i["reduction"] for i in info] == [1, 2, 4, 8, 16, 8, 4, 2, 1]
    assert [i["reduction"] for i in info] == [32 // o.shape[1] for o in model.outputs]
