"""Fine-tuning: pretrained weights with a new head, frozen stages, the weights' preprocessing.

Offline: the keras.applications ImageNet file is made here (a keras.applications model with
random weights, saved under the real file name in a temporary KERAS_HOME), so every test
checks against keras.applications itself, not against numbers cnnbuilder produced.
"""

from __future__ import annotations

import importlib
import json
import logging

import h5py
import keras
import numpy as np
import pytest

import cnnbuilder
from cnnbuilder import RecipeError, WeightsError
from cnnbuilder.model import freeze
from cnnbuilder.training import commit

SHAPE = (32, 32, 3)
NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _randomized(constructor, **kwargs) -> keras.Model:
    """A keras.applications model with random weights and BatchNorm statistics that are not
    the initial ones (so a test can tell loaded statistics from fresh ones)."""
    model = constructor(weights=None, **kwargs)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") + w.path.endswith("variance")
                       for w in model.weights])
    return model


@pytest.fixture(scope="module")
def imagenet_home(tmp_path_factory):
    """A KERAS_HOME whose cache holds a (random) ResNet50 no-top file, and that model."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    reference = _randomized(keras.applications.ResNet50, include_top=False, input_shape=SHAPE)
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(home / "models" / NOTOP, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    return home, reference


@pytest.fixture
def keras_home(imagenet_home, monkeypatch):
    home, reference = imagenet_home
    monkeypatch.setenv("KERAS_HOME", str(home))
    return reference


def _images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE)).astype("float32")


def _backbone(model, layer="conv5_block3_out"):
    return keras.Model(model.inputs, model.get_layer(layer).output)


# ------------------------------------------------------------------ weights with a new head


def test_imagenet_weights_with_new_classes_load_the_backbone(keras_home, caplog):
    with caplog.at_level(logging.INFO, logger="cnnbuilder"):
        model = cnnbuilder.build("resnet50", weights="imagenet", classes=5, input_shape=SHAPE)
    assert model.output_shape == (None, 5)
    x = _images()
    np.testing.assert_allclose(np.asarray(_backbone(model)(x)), np.asarray(keras_home(x)),
                               rtol=1e-5, atol=1e-5)
    # The message names the new layers (the classifier) and counts the loaded ones.
    head = [layer.name for layer in model.layers if layer.weights][-1]
    message = caplog.text
    assert f"new (randomly initialized): {head}" in message
    assert f"{sum(1 for l in model.layers if l.weights) - 1} layers with weights loaded" in message


def test_features_only_out_indices_give_the_applications_stage_outputs(keras_home):
    # out_indices index the feature taps as timm's: 0 is the stem's ReLU (timm's act1, /2),
    # 1..4 the ends of conv2_x..conv5_x (layer1..layer4).
    backbone = cnnbuilder.build("resnet50", weights="imagenet", features_only=True,
                                out_indices=(2, 3, 4), input_shape=SHAPE)
    # He et al. 2016, Table 1: conv3_x..conv5_x end at strides 8, 16, 32 with 512..2048 channels.
    assert cnnbuilder.feature_info(backbone) == [
        {"stage": "conv3", "channels": 512, "reduction": 8, "layer": "conv3_block4_out", "module": "conv3"},
        {"stage": "conv4", "channels": 1024, "reduction": 16, "layer": "conv4_block6_out", "module": "conv4"},
        {"stage": "conv5", "channels": 2048, "reduction": 32, "layer": "conv5_block3_out", "module": "conv5"},
    ]
    x = _images()
    ends = ["conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]  # keras' names
    expected = keras.Model(keras_home.inputs, [keras_home.get_layer(n).output for n in ends])(x)
    for ours, theirs in zip(backbone(x), expected):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5)
    # Truncated after the last feature map asked for.
    early = cnnbuilder.build("resnet50", features_only=True, out_indices=(1,), input_shape=SHAPE)
    assert not any(layer.name.startswith("conv3") for layer in early.layers)
    stem = cnnbuilder.build("resnet50", features_only=True, out_indices=(0,), input_shape=SHAPE)
    assert [(i["channels"], i["reduction"], i["stage"]) for i in cnnbuilder.feature_info(stem)] == [
        (64, 2, "stem")]
    assert not any(layer.name.startswith("conv2") or "pool" in layer.name for layer in stem.layers)


@pytest.mark.parametrize("indices, match", [((5,), "out of range"), ((2, -3), "twice"),
                                            (("conv3",), "feature indices"), ((), "non-empty")])
def test_bad_out_indices_list_the_feature_maps(indices, match):
    with pytest.raises(RecipeError, match=match) as info:
        cnnbuilder.build("resnet50", features_only=True, out_indices=indices)
    assert "0: stem_activation1, 1: conv2, 2: conv3, 3: conv4, 4: conv5" in str(info.value)
    with pytest.raises(RecipeError, match="features_only"):
        cnnbuilder.build("resnet50", out_indices=(1,))


def test_keras_file_and_weights_file_of_other_classes(tmp_path):
    source = cnnbuilder.build("resnet20", classes=10)
    source.save(tmp_path / "ten.keras")
    source.save_weights(tmp_path / "ten.weights.h5")
    x = _images()
    expected = np.asarray(_backbone(source, "stage3_block3_out")(x))
    for path in (tmp_path / "ten.keras", tmp_path / "ten.weights.h5"):
        model = cnnbuilder.build("resnet20", classes=3, weights=str(path))
        np.testing.assert_allclose(np.asarray(_backbone(model, "stage3_block3_out")(x)), expected,
                                   rtol=1e-6, atol=1e-6)
    same = cnnbuilder.build("resnet20", classes=10, weights=str(tmp_path / "ten.keras"))
    np.testing.assert_allclose(np.asarray(same(x)), np.asarray(source(x)), rtol=1e-6, atol=1e-6)


def test_weights_of_another_architecture_name_the_first_layer_that_does_not_fit(tmp_path):
    cnnbuilder.build("resnet20").save(tmp_path / "r20.keras")
    deeper = cnnbuilder.build("resnet32")
    shallow = {layer.name for layer in cnnbuilder.build("resnet20").layers}
    first = next(l.name for l in deeper.layers if l.weights and l.name not in shallow)
    with pytest.raises(WeightsError, match=f"its layer {first} .*is not in the weights"):
        cnnbuilder.build("resnet32", weights=str(tmp_path / "r20.keras"))
    # The other way round: a layer of the weights the network lacks.
    deeper.save(tmp_path / "r32.keras")
    with pytest.raises(WeightsError, match=f"layer {first} .*does not have"):
        cnnbuilder.build("resnet20", weights=str(tmp_path / "r32.keras"))


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("name", [n for n in cnnbuilder.list_recipes()
                                  if cnnbuilder.load_recipe(n).metadata.get("keras_application")])
def test_recipe_preprocessing_is_its_keras_application_modules(name):
    """metadata.preprocessing applied by `preprocess` equals the keras.applications module's
    `preprocess_input` on the same uint8 pixels."""
    import tensorflow as tf

    from cnnbuilder.data import preprocess

    meta = cnnbuilder.load_recipe(name).metadata
    module = getattr(keras.applications, meta["keras_application"]).__module__.rsplit(".", 1)[-1]
    preprocess_input = importlib.import_module(f"keras.applications.{module}").preprocess_input
    images = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    ours = preprocess(tf.constant(images), (8, 8, 3), normalization=meta["preprocessing"]).numpy()
    np.testing.assert_allclose(ours, preprocess_input(images.astype("float32")), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------ freezing


def test_freeze_backbone_or_stages():
    model = cnnbuilder.build("resnet20", classes=3)
    assert freeze(model, "stem,stage1") == ("stem", "stage1")
    trainable = {l.name for l in model.layers if l.weights and l.trainable}
    assert not any(n.startswith(("stem", "stage1")) for n in trainable)
    assert any(n.startswith("stage2") for n in trainable)
    model = cnnbuilder.build("resnet20", classes=3)
    assert freeze(model, "backbone") == ("stem", "stage1", "stage2", "stage3")
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]  # the classifier
    for spec, match in [("stage9", "choose from backbone, stem, stage1"), ("head", "what trains"),
                        (3, "comma-separated")]:
        with pytest.raises(RecipeError, match=match):
            freeze(cnnbuilder.build("resnet20", classes=3), spec)


def _dataset(n=48, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    x[..., 0] = (y[:, None, None] * 100).astype(np.uint8)  # learnable
    return x, y


def _weights(model, prefixes):
    return {w.path: np.asarray(w) for l in model.layers if l.name.startswith(prefixes)
            for w in l.weights}


@pytest.fixture(scope="module")
def head_run(imagenet_home, tmp_path_factory):
    """Phase 1: ResNet50 from the ImageNet file, backbone frozen, one epoch."""
    home, _ = imagenet_home
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        out = tmp_path_factory.mktemp("head") / "run"
        start = cnnbuilder.build("resnet50", weights="imagenet", classes=3, input_shape=SHAPE)
        result = cnnbuilder.train("resnet50", _dataset(), output=out, weights="imagenet",
                                  freeze="backbone", epochs=1, batch_size=16, input_shape=SHAPE,
                                  verbose=0, tensorboard=False, training={"learning_rate": 0.01})
    return start, result, out


@pytest.mark.slow
def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(head_run):
    start, result, out = head_run
    backbone = ("stem", "conv")
    before, after = _weights(start, backbone), _weights(result.model, backbone)
    assert any("moving_mean" in k for k in before)
    for key, value in before.items():  # bit-for-bit, the BatchNorm statistics included
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    head_before, head_after = _weights(start, ("head",)), _weights(result.model, ("head",))
    assert head_before.keys() == head_after.keys()  # ...while the new head trained
    assert not all(np.array_equal(head_after[k], v) for k, v in head_before.items())
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == "imagenet" and run["freeze"] == ["backbone"]
    assert run["preprocessing"]["normalization"] == "caffe"  # resnet50's metadata.preprocessing


@pytest.mark.slow
def test_serving_default_is_keras_applications_preprocess_input_then_the_application(
        head_run, tmp_path):
    import tensorflow as tf

    _, result, out = head_run
    application = keras.applications.ResNet50(weights=None, input_shape=SHAPE, classes=3)
    cnnbuilder.transfer_weights(result.model, application)
    version = cnnbuilder.export(out, tmp_path / "served" / "1")
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    images = np.random.default_rng(5).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    served = signature(images=tf.constant(images))["probabilities"].numpy()
    expected = application(keras.applications.resnet.preprocess_input(images.astype("float32")))
    np.testing.assert_allclose(served, np.asarray(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fine_tuning_from_a_run_directory_with_fewer_frozen_stages(head_run, tmp_path):
    _, phase1, first = head_run
    out = tmp_path / "finetune"
    phase2 = cnnbuilder.train("resnet50", _dataset(), output=out, weights=str(first),
                              freeze="stem,conv2", epochs=1, batch_size=16, input_shape=SHAPE,
                              verbose=0, tensorboard=False, training={"learning_rate": 0.001})
    before, after = _weights(phase1.model, ("stem", "conv2")), _weights(phase2.model, ("stem", "conv2"))
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    moved = _weights(phase1.model, ("conv5",)), _weights(phase2.model, ("conv5",))
    assert not all(np.array_equal(moved[1][k], v) for k, v in moved[0].items())
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == str(first.resolve()) and run["freeze"] == ["stem", "conv2"]
    assert run["preprocessing"]["normalization"] == "caffe"  # the first run's


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_resume_mid_phase_keeps_the_stages_frozen(tmp_path, monkeypatch):
    source = tmp_path / "source.keras"
    cnnbuilder.build("resnet20", classes=3, input_shape=SHAPE).save(source)
    start = cnnbuilder.build("resnet20", classes=3, weights=str(source))
    frozen = ("stem", "stage1", "stage2")
    kwargs = dict(output=tmp_path / "run", weights=str(source), freeze=list(frozen), epochs=3,
                  batch_size=16, verbose=0, tensorboard=False)
    on_epoch_end = commit.EpochCommit.on_epoch_end

    def interrupted(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if epoch == 0:
            raise _Stop()

    monkeypatch.setattr(commit.EpochCommit, "on_epoch_end", interrupted)
    with pytest.raises(_Stop):
        cnnbuilder.train("resnet20", _dataset(), **kwargs)
    monkeypatch.setattr(commit.EpochCommit, "on_epoch_end", on_epoch_end)
    with pytest.raises(Exception, match="other settings"):  # the freezing is the run's
        cnnbuilder.train("resnet20", _dataset(), **{**kwargs, "freeze": "stem"})
    result = cnnbuilder.train("resnet20", _dataset(), **kwargs)
    assert result.metrics["epochs_run"] == 3
    before, after = _weights(start, frozen), _weights(result.model, frozen)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert not all(np.array_equal(v, _weights(start, ("stage3",))[k])
                   for k, v in _weights(result.model, ("stage3",)).items())


@pytest.mark.parametrize("args, message", [
    (["--freeze", "stage9"], "no stage 'stage9' in resnet20"),
    (["--weights", "nowhere.keras"], "weights 'nowhere.keras' not found"),
    (["--weights", "imagenet"], "no ImageNet weights"),
])
def test_cli_train_refuses_bad_weights_and_freeze_before_writing(tmp_path, capsys, args, message):
    from cnnbuilder.cli import main

    out = tmp_path / "run"
    assert main(["train", "resnet20", "--output", str(out), "--epochs", "1", *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
