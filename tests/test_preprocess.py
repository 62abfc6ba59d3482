"""Tests of cnnbuilder.data.preprocess: the one conversion from stored images to model input.

Channel adaptation with the count known statically and only at run time (a tf.function
taking (None, None, None, None) images, like the SavedModel signature), resizing, each
normalization mode against keras.applications' own `preprocess_input`, and the JSON
record a run stores.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnbuilder.data import preprocess, preprocess_from_config, preprocessing_config
from cnnbuilder.data.preprocess import NORMALIZATIONS, check_preprocessing_config, normalized_range
from cnnbuilder.data.statistics import channel_statistics
from cnnbuilder.errors import DataError


def images(shape, seed=0) -> np.ndarray:
    """Random uint8 images of `shape`."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def dynamic(input_shape, normalization="unit"):
    """`preprocess` in a graph where nothing but the rank of the images is known."""
    return tf.function(
        lambda x: preprocess(x, input_shape, normalization=normalization),
        input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)],
    )


# ---------------------------------------------------------------------------- channels


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (1, 1, lambda x: x),
        (1, 3, lambda x: np.repeat(x, 3, axis=-1)),
        (3, 1, lambda x: tf.image.rgb_to_grayscale(x).numpy()),
        (3, 3, lambda x: x),
        (4, 3, lambda x: x[..., :3]),
        (2, 1, lambda x: x[..., :1]),
        (2, 3, lambda x: np.repeat(x[..., :1], 3, axis=-1)),
        (4, 1, lambda x: tf.image.rgb_to_grayscale(x[..., :3]).numpy()),
        (4, 4, lambda x: x),
    ],
)
def test_channel_adaptation_static_and_dynamic(source, target, expected):
    x = images((3, 6, 6, source))
    static = preprocess(x, (6, 6, target)).numpy()
    assert static.shape == (3, 6, 6, target) and static.dtype == np.float32
    np.testing.assert_allclose(static, expected(x / np.float32(255)), atol=1e-6)
    # Known only at run time: the branch for that count is the same computation.
    np.testing.assert_array_equal(dynamic((6, 6, target))(x).numpy(), static)


def test_unsupported_static_channels_raise_when_the_graph_is_built():
    with pytest.raises(DataError, match="channels"):
        preprocess(np.zeros((1, 4, 4, 1), np.uint8), (4, 4, 4))


@pytest.mark.parametrize("channels", [5, 2])
def test_unsupported_dynamic_channels_fail_when_the_graph_runs(channels):
    function = dynamic((8, 8, 3) if channels == 5 else (8, 8, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="channels"):
        function(np.zeros((1, 8, 8, channels), np.uint8))


def test_one_image_and_float_images():
    x = images((5, 7, 3))
    single = preprocess(x, (5, 7, 3))
    assert single.shape == (5, 7, 3)
    np.testing.assert_allclose(single.numpy(), x / 255.0, atol=1e-7)
    # Float images are taken as already in [0, 1].
    np.testing.assert_array_equal(preprocess(single, (5, 7, 3)).numpy(), single.numpy())


# ------------------------------------------------------------------------------ resize


@pytest.mark.parametrize(
    ("size", "target", "antialias"),
    [((8, 8), (32, 32), False), ((50, 40), (32, 32), True), ((20, 40), (32, 32), True),
     ((32, 32), (32, 32), None)],
)
def test_resize_is_bilinear_antialiased_only_when_shrinking(size, target, antialias):
    x = images((2, *size, 1), seed=4)
    out = preprocess(x, (*target, 1)).numpy()
    unit = x.astype(np.float32) / 255
    if antialias is None:  # same size: untouched
        expected = unit
    else:
        expected = tf.image.resize(unit, target, method="bilinear", antialias=antialias).numpy()
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(dynamic((*target, 1))(x).numpy(), out)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_none_height_and_width_keep_the_stored_size():
    x = images((2, 9, 11, 3))
    out = preprocess(x, (None, None, 1))
    assert out.shape == (2, 9, 11, 1)
    assert dynamic((None, None, 1))(x).shape == (2, 9, 11, 1)


@pytest.mark.parametrize("shape", [(3, 3), (0, 3, 3), "32x32x3", (32, 32, 0), (32.0, 32, 3)])
def test_bad_input_shapes_are_refused(shape):
    with pytest.raises(DataError, match="input_shape"):
        preprocess(images((1, 4, 4, 3)), shape)


# ------------------------------------------------------------------------ normalization


@pytest.mark.parametrize(
    ("normalization", "family"),
    [
        ("tf", keras.applications.mobilenet),
        ("tf", keras.applications.inception_v3),
        ("torch", keras.applications.densenet),
        ("caffe", keras.applications.resnet50),
        ("caffe", keras.applications.vgg16),
    ],
)
def test_normalization_matches_keras_applications(normalization, family):
    x = images((2, 9, 9, 3), seed=5)
    ours = preprocess(x, (9, 9, 3), normalization=normalization).numpy()
    theirs = family.preprocess_input(x.astype(np.float32))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(
        dynamic((9, 9, 3), normalization)(x).numpy(), ours
    )
    low, high = normalized_range(normalization)
    assert low <= ours.min() and ours.max() <= high


def test_unit_normalization_keeps_zero_to_one():
    assert normalized_range("unit") == [0.0, 1.0]
    assert normalized_range("tf") == [-1.0, 1.0]


@pytest.mark.parametrize(("normalization", "channels"), [("torch", 1), ("caffe", 1), ("nope", 3)])
def test_normalization_needs_a_known_mode_and_rgb_for_imagenet_statistics(normalization, channels):
    with pytest.raises(DataError, match="normalization"):
        preprocess(images((1, 4, 4, channels)), (4, 4, channels), normalization=normalization)


STATS = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125]}


def test_dataset_normalization_is_x_minus_mean_over_std():
    x = np.array([[[[0, 255, 51], [255, 0, 204]]]], np.uint8)  # (1, 1, 2, 3)
    expected = (x / 255.0 - np.array(STATS["mean"])) / np.array(STATS["std"])
    ours = preprocess(x, (1, 2, 3), normalization="dataset", **STATS).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
    graph = tf.function(lambda v: preprocess(v, (1, 2, 3), normalization="dataset", **STATS),
                        input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)])
    np.testing.assert_array_equal(graph(x).numpy(), ours)
    # Grey images tiled to RGB are standardized per channel all the same.
    grey = preprocess(x[..., :1], (1, 2, 3), normalization="dataset", **STATS).numpy()
    np.testing.assert_allclose(grey, (np.repeat(x[..., :1], 3, -1) / 255.0 - STATS["mean"])
                               / STATS["std"], rtol=1e-6, atol=1e-6)
    assert normalized_range("dataset", **STATS) == [-6.0, 2.0]  # (0 - .75) / .125, (1 - .5) / .25


@pytest.mark.parametrize(("mean", "std", "match"), [
    (None, None, "mean"), ([0.5, 0.5], [0.2, 0.2, 0.2], "3 finite"),
    ([0.5] * 3, [0.2, 0.0, 0.2], "above 0"), ([0.5, float("nan"), 0.5], [0.2] * 3, "mean"),
])
def test_dataset_normalization_needs_one_statistic_per_channel(mean, std, match):
    with pytest.raises(DataError, match=match):
        preprocessing_config((4, 4, 3), "dataset", mean=mean, std=std)
    with pytest.raises(DataError, match="takes no mean"):
        preprocess(images((1, 4, 4, 3)), (4, 4, 3), normalization="torch", **STATS)
    record = preprocessing_config((4, 4, 3), "dataset", **STATS)
    with pytest.raises(DataError, match="fields"):
        check_preprocessing_config({k: v for k, v in record.items() if k != "std"})
    with pytest.raises(DataError, match="fields"):
        check_preprocessing_config({**preprocessing_config((4, 4, 3)), "mean": STATS["mean"]})


def test_channel_statistics_are_the_unit_inputs_statistics_from_arrays_and_streams():
    x = images((700, 5, 7, 1), seed=3)  # more than one chunk; grey becomes RGB, then resized
    unit = preprocess(x, (6, 6, 3)).numpy().reshape(-1, 3).astype(np.float64)
    mean, std = channel_statistics((x, np.zeros(700)), (6, 6, 3))
    np.testing.assert_allclose(mean, unit.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, unit.std(0), rtol=1e-5)
    stream = tf.data.Dataset.from_tensor_slices((x, np.zeros(700, np.int64)))
    np.testing.assert_allclose(channel_statistics(stream, (6, 6, 3)), (mean, std), rtol=1e-6)
    blank = np.zeros((2, 3, 3, 3), np.uint8)  # a channel that never varies is not scaled
    assert channel_statistics((blank, np.zeros(2)), (3, 3, 3)) == ((0.0,) * 3, (1.0,) * 3)


def test_recipes_accept_exactly_the_normalization_modes():
    from cnnbuilder.recipe.recipe import METADATA_CHOICES

    assert METADATA_CHOICES["preprocessing"] == NORMALIZATIONS


# ------------------------------------------------------------------------------ record


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_config_round_trips_through_json(normalization):
    stats = STATS if normalization == "dataset" else {}
    config = preprocessing_config((16, 20, 3), normalization, **stats)
    record = json.loads(json.dumps(config))
    assert check_preprocessing_config(record, (16, 20, 3)) == config
    x = images((2, 30, 10, 1))
    np.testing.assert_array_equal(
        preprocess_from_config(x, record).numpy(),
        preprocess(x, (16, 20, 3), normalization=normalization, **stats).numpy(),
    )


def test_every_field_of_the_record_is_read():
    config = preprocessing_config((8, 8, 1))
    for key, other in [("resize", "nearest"), ("antialias", True), ("channels", "average"),
                       ("normalization", "imagenet"), ("input_shape", [8, 8])]:
        with pytest.raises(DataError, match=key):
            check_preprocessing_config({**config, key: other})
    with pytest.raises(DataError, match="fields"):
        check_preprocessing_config({**config, "scale": 255.0})
    with pytest.raises(DataError, match="input shape"):
        check_preprocessing_config(config, (16, 16, 1))


def test_a_record_written_before_normalization_modes_means_unit():
    old = {"scale": 255.0, "resize": "bilinear", "channels": 3}
    assert check_preprocessing_config(old, (32, 32, 3)) == preprocessing_config((32, 32, 3))
    assert check_preprocessing_config({"scale": 255.0, "resize": "bilinear"}, (8, 8, 1)) == (
        preprocessing_config((8, 8, 1))
    )
    with pytest.raises(DataError, match="former"):
        check_preprocessing_config({"scale": 127.5, "resize": "bilinear"}, (8, 8, 1))
