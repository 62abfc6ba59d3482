"""`build` behaves like the keras.applications constructors."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

import cnnbuilder
from cnnbuilder import RecipeError, WeightsError
from helpers import TINY_RECIPE, write


@pytest.fixture
def tiny_path(tmp_path):
    return write(tmp_path, "tiny.yaml", TINY_RECIPE)


def test_build_from_a_yaml_path_with_shape_and_classes(tiny_path):
    model = cnnbuilder.build(tiny_path, input_shape=(24, 24, 1), classes=5)
    assert model.name == "tiny"
    assert model.input_shape == (None, 24, 24, 1)
    assert model.output_shape == (None, 5)
    probabilities = np.asarray(model(np.zeros((2, 24, 24, 1), "float32")))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_recipe_defaults_for_shape_and_classes(tiny_path):
    model = cnnbuilder.build(str(tiny_path))
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 4)


def test_build_from_a_dict_and_a_recipe_object(tiny_path):
    recipe = cnnbuilder.load_recipe(tiny_path)
    assert cnnbuilder.build(recipe).count_params() == cnnbuilder.build(recipe.document.data).count_params()


@pytest.mark.parametrize("pooling, shape", [(None, (None, None, None, 16)), ("avg", (None, 16)), ("max", (None, 16))])
def test_include_top_false_and_pooling(tiny_path, pooling, shape):
    model = cnnbuilder.build(tiny_path, include_top=False, pooling=pooling)
    assert model.output_shape == shape
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_any_size_and_channel_count_without_top(channels):
    model = cnnbuilder.build("densenet121", include_top=False, input_shape=(None, None, channels),
                             pooling="avg")
    for size in (32, 47):
        out = model(np.zeros((1, size, size, channels), "float32"))
        assert tuple(out.shape) == (1, 1024)


def test_default_shape_without_top_is_dynamic_like_keras():
    ours = cnnbuilder.build("resnet50", include_top=False)
    reference = keras.applications.ResNet50(weights=None, include_top=False)
    assert ours.input_shape == reference.input_shape == (None, None, None, 3)


def test_input_tensor_is_used_as_the_model_input():
    inputs = keras.Input((48, 48, 3), name="images")
    model = cnnbuilder.build("vgg16", include_top=False, input_tensor=inputs, pooling="max")
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 512)


def test_input_tensor_downstream_of_other_layers_keeps_the_source_input():
    inputs = keras.Input((40, 40, 1))
    resized = keras.layers.Resizing(32, 32)(inputs)
    model = cnnbuilder.build("resnet50v2", include_top=False, input_tensor=resized, input_shape=(32, 32, 1))
    assert model.inputs[0] is inputs


def test_name_and_classifier_activation():
    model = cnnbuilder.build("vgg16", input_shape=(32, 32, 3), classes=3, name="mine",
                             classifier_activation=None)
    assert model.name == "mine"
    logits = np.asarray(model(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")))
    assert not np.allclose(logits.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights="nowhere.h5"), "weights"),
        (dict(weights="imagenet", classifier_activation="relu"), "classifier_activation"),
        (dict(pooling="mean", include_top=False), "pooling"),
        (dict(classes=0), "classes"),
        (dict(classifier_activation="softmaxx"), "classifier_activation"),
        (dict(input_shape=(32, 32)), "input_shape"),
        (dict(weights="imagenet", input_shape=(64, 64, 3)), "input_shape"),
        (dict(growth_rate=0), "growth_rate"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnnbuilder.build("densenet121", **kwargs)


def test_layer_names_are_deterministic_across_builds(tiny_path):
    first = [layer.name for layer in cnnbuilder.build(tiny_path).layers]
    second = [layer.name for layer in cnnbuilder.build(tiny_path).layers]
    assert first == second
    assert "s2_block1_0_conv" in first and "stem_conv1" in first


# No Lambda layers: tests/test_zoo.py::test_recipe checks every shipped recipe.


def test_keras_round_trip_in_safe_mode(tmp_path):
    model = cnnbuilder.build("resnet50v2", input_shape=(32, 32, 3), classes=3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    config_model = keras.Model.from_config(model.get_config())
    assert config_model.count_params() == model.count_params()


def test_weights_file_round_trip(tmp_path):
    # A DenseNet-BC of 16 layers: every kind of DenseNet layer, a tenth of DenseNet-121's.
    source = cnnbuilder.build("densenet_bc100_k12", depth=16, include_top=False, growth_rate=8)
    path = tmp_path / "net.weights.h5"
    source.save_weights(path)
    loaded = cnnbuilder.build("densenet_bc100_k12", depth=16, include_top=False, growth_rate=8,
                              weights=str(path))
    assert len(loaded.weights) == len(source.weights)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(WeightsError, match="does not fit"):
        cnnbuilder.build("densenet_bc100_k12", depth=16, include_top=False, weights=str(path))


def _write_keras_applications_h5(model: keras.Model, path) -> None:
    """A weight file in the legacy layout keras.applications downloads."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def _randomized_application(**kwargs):
    reference = keras.applications.ResNet50(weights=None, **kwargs)
    rng = np.random.default_rng(3)
    reference.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") + (w.path.endswith("variance") * 1.0)
                           for w in reference.weights])
    return reference


def test_keras_applications_h5_file_loads(tmp_path):
    reference = _randomized_application(include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    _write_keras_applications_h5(reference, path)
    ours = cnnbuilder.build("resnet50", include_top=False, input_shape=(32, 32, 3), weights=str(path))
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)


def test_imagenet_weights_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        cnnbuilder.build("resnet50", include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    message = str(info.value)
    expected = tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(expected) in message and "keras.applications.ResNet50" in message

    reference = _randomized_application(include_top=False, input_shape=(32, 32, 3))
    expected.parent.mkdir(parents=True)
    _write_keras_applications_h5(reference, expected)
    ours = cnnbuilder.build("resnet50", include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)


def test_recipe_errors_come_before_any_layer(tmp_path):
    path = write(tmp_path, "late.yaml", """\
        name: late
        metadata: {input_shape: [8, 8, 3]}
        stem:
          - conv: {filters: 4}
        head:
          - fc: {units: 0}
        """)
    before = keras.backend.get_uid("conv2d")
    with pytest.raises(RecipeError, match=r"late.yaml, line 6"):
        cnnbuilder.build(path)
    assert keras.backend.get_uid("conv2d") == before + 1  # get_uid itself counts one
