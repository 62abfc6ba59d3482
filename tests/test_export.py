"""Export (SavedModel with two signatures, LiteRT) and prediction from exported models.

One small classifier is trained once on the real scikit-learn digits (32x32 grey) and
written as a fake training run directory; the slow tests export it and check the
artifacts against the Keras model.
"""

from __future__ import annotations

import datetime
import json
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras

from cnnbuilder.serving import exporting as export_module
from cnnbuilder.errors import CnnBuilderError, DataError, RunError
from cnnbuilder.serving.exporting import export, preprocess_uint8, weights_checksum
from cnnbuilder.serving.prediction import format_predictions, predict, read_image

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
INPUT_SHAPE = (32, 32, 1)
# ITU-R 601 luma, as tf.image.rgb_to_grayscale; the numpy reference below uses it.
LUMA = np.array([0.2989, 0.5870, 0.1140])


# ----------------------------------------------------------------------------- fixtures


def _digits_uint8(size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 (N, s, s, 1) (8x8 when size is None) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., np.newaxis] * (255.0 / 16.0)  # 0..16 -> 0..255
    if size is not None:
        images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    return np.clip(np.round(images), 0, 255).astype(np.uint8), digits.target


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified train / test indices."""
    from sklearn.model_selection import train_test_split

    _, labels = _digits_uint8(None)
    return train_test_split(np.arange(n), test_size=0.25, stratify=labels, random_state=0)


def _build_model() -> keras.Model:
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    # momentum 0.9: a few epochs must be enough for the moving statistics to settle.
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_digits")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained model and the run directory (model.keras, run.json, metrics.json)."""
    keras.utils.set_random_seed(0)
    images, labels = _digits_uint8(32)
    train, test = _split(len(labels))
    model = _build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(images[train] / 255.0, labels[train], epochs=4, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(images[test] / 255.0, labels[test], verbose=0)
    # The class checks below only mean something if the model tells digits apart.
    assert accuracy > 0.6, f"test model too weak to test with: accuracy {accuracy}"
    directory = tmp_path_factory.mktemp("run")
    model.save(directory / "model.keras")
    run_info = {
        "recipe": "tiny_digits", "params": {"filters": [16, 32, 64]},
        "input_shape": list(INPUT_SHAPE), "class_names": CLASS_NAMES, "dataset": "digits",
        "preprocessing": {"scale": 255.0, "resize": "bilinear"},
    }
    metrics = {"test_accuracy": accuracy, "test_loss": loss, "epochs_run": 4,
               "params": model.count_params(), "seconds": 1.0}
    (directory / "run.json").write_text(json.dumps(run_info))
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return types.SimpleNamespace(dir=directory, model=model, metrics=metrics, test=test)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run exported as a SavedModel to BASE/digits/1, and the reloaded SavedModel."""
    base = tmp_path_factory.mktemp("saved_models") / "digits"
    path = export(run.dir, base / "1")
    return types.SimpleNamespace(path=path, base=base, loaded=tf.saved_model.load(str(path)))


# ----------------------------------------------------------------- numpy references


def _np_resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (N, h, w, C) with half-pixel centres, as tf.image.resize upscales."""

    def taps(size_in, size_out):
        centre = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        low = np.floor(centre)
        frac = centre - low
        return (np.clip(low, 0, size_in - 1).astype(int),
                np.clip(low + 1, 0, size_in - 1).astype(int), frac)

    y0, y1, fy = taps(images.shape[1], height)
    x0, x1, fx = taps(images.shape[2], width)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    top = images[:, y0][:, :, x0] * (1 - fx) + images[:, y0][:, :, x1] * fx
    bottom = images[:, y1][:, :, x0] * (1 - fx) + images[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def _np_preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, 1|3) -> float32 (N, 32, 32, 1) in [0, 1], in numpy only."""
    x = images.astype(np.float64)
    if x.shape[-1] == 3:
        x = (x @ LUMA)[..., np.newaxis]
    x = _np_resize_bilinear(x / 255.0, *INPUT_SHAPE[:2])
    return np.clip(x, 0, 1).astype(np.float32)


def _tf_reference(images: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, c) -> model input, spelled out with plain TF ops (static channels)."""
    x = tf.cast(images, tf.float32)
    if images.shape[-1] in (2, 4):
        x = x[..., :-1]
    if x.shape[-1] == 3:
        x = tf.image.rgb_to_grayscale(x)
    x = x / 255.0
    if images.shape[1:3] != INPUT_SHAPE[:2]:
        x = tf.image.resize(x, INPUT_SHAPE[:2], method="bilinear", antialias=True)
    return tf.clip_by_value(x, 0.0, 1.0).numpy()


def _variants(digits8: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Real digits as uint8 images of another size and channel count (tinted, + alpha)."""
    x = tf.image.resize(digits8.astype(np.float32), (height, width), method="bilinear").numpy()
    if channels >= 3:  # a tint, so that RGB -> grey really has to weigh the channels
        x = x * np.array([1.0, 0.8, 0.6])
    if channels in (2, 4):
        alpha = np.random.default_rng(0).integers(0, 256, x.shape[:-1] + (1,))
        x = np.concatenate([x, alpha], axis=-1)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ fast tests


@pytest.mark.parametrize("name", ["latest", "0", "01", "-1", "1.5", "v1"])
def test_version_directory_must_be_a_positive_integer(tmp_path, name):
    with pytest.raises(RunError, match="TensorFlow Serving") as error:
        export(tmp_path / "no-such-run", tmp_path / "models" / "digits" / name)
    assert repr(name) in str(error.value)
    assert not (tmp_path / "models").exists()


def test_missing_run_directory_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="does not exist") as error:
        export(tmp_path / "no-such-run", tmp_path / "models" / "digits" / "1")
    assert str(tmp_path / "no-such-run") in str(error.value)
    assert not (tmp_path / "models").exists()


def test_run_directory_without_model_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="model.keras"):
        export(tmp_path, tmp_path / "models" / "digits" / "1")


def test_corrupt_model_file_is_a_run_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(b"PK\x03\x04 certainly not a keras archive")
    with pytest.raises(RunError, match="Cannot load the Keras model") as error:
        export(run_dir, tmp_path / "models" / "digits" / "1")
    assert str(run_dir / "model.keras") in str(error.value)
    assert not (tmp_path / "models" / "digits" / "1").exists()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(CnnBuilderError, match="litert"):
        export(tmp_path, tmp_path / "models" / "x" / "1", format="onnx")


@pytest.mark.parametrize(
    "shape", [(2, 8, 8, 1), (2, 50, 40, 3), (1, 32, 32, 4), (3, 20, 30, 2), (2, 32, 32, 3)]
)
@pytest.mark.parametrize("input_shape", [(32, 32, 1), (32, 32, 3)])
def test_preprocess_uint8_static_and_dynamic_channels(shape, input_shape):
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    expected = _tf_reference(images) if input_shape[-1] == 1 else None
    eager = preprocess_uint8(images, input_shape).numpy()
    # The signature's case: nothing but the rank is known when the graph is built.
    dynamic = tf.function(
        lambda x: preprocess_uint8(x, input_shape),
        input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)],
    )(images).numpy()
    assert eager.shape == dynamic.shape == (shape[0], *input_shape)
    np.testing.assert_allclose(dynamic, eager, atol=1e-5)
    assert eager.min() >= 0.0 and eager.max() <= 1.0
    if expected is not None:
        np.testing.assert_allclose(eager, expected, atol=1e-5)
    else:  # grey / RGB tiled or kept: every output channel is a real colour or grey copy
        assert not np.allclose(eager, 0.0)


def test_preprocess_uint8_matches_the_training_pipeline():
    data = pytest.importorskip("cnnbuilder.data.datasets")
    if not hasattr(data, "to_model_input"):
        pytest.skip("cnnbuilder.data.datasets.to_model_input is not available")
    rng = np.random.default_rng(2)
    for shape in [(2, 8, 8, 1), (2, 50, 40, 3), (1, 32, 32, 4), (2, 20, 30, 2)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        for input_shape in [(32, 32, 1), (32, 32, 3)]:
            np.testing.assert_allclose(
                preprocess_uint8(images, input_shape).numpy(),
                data.to_model_input(images, input_shape).numpy(),
                atol=1e-5,  # float32 rounding of a different operation order
                err_msg=f"{shape} -> {input_shape}: serving and training preprocessing differ",
            )


def test_preprocess_uint8_rejects_five_channels():
    function = tf.function(
        lambda x: preprocess_uint8(x, INPUT_SHAPE),
        input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="channels"):
        function(np.zeros((1, 8, 8, 5), np.uint8))


def test_weights_checksum_tracks_values_not_names():
    keras.utils.set_random_seed(3)
    model = _build_model()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert weights_checksum(clone) == weights_checksum(model)
    weights = model.get_weights()
    weights[-1] = weights[-1] + 1e-3
    clone.set_weights(weights)
    assert weights_checksum(clone) != weights_checksum(model)


def test_read_image_keeps_channel_counts(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cases = {
        "L": (Image.fromarray(grey, "L"), 1),
        "LA": (Image.fromarray(np.stack([grey, grey], -1), "LA"), 2),
        "RGB": (Image.fromarray(np.stack([grey] * 3, -1), "RGB"), 3),
        "RGBA": (Image.fromarray(np.stack([grey] * 4, -1), "RGBA"), 4),
        "P": (Image.fromarray(np.stack([grey] * 3, -1), "RGB").convert("P"), 3),
        "I16": (Image.fromarray(grey.astype(np.uint16) * 257), 1),
    }
    for name, (image, channels) in cases.items():
        path = tmp_path / f"{name}.png"
        image.save(path)
        array = read_image(path)
        assert array.dtype == np.uint8 and array.shape == (8, 8, channels), name
        if name in ("L", "I16"):
            np.testing.assert_array_equal(array[..., 0], grey)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist") as error:
        read_image(tmp_path / "missing.png")
    assert "missing.png" in str(error.value)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="Cannot read the image") as error:
        read_image(tmp_path / "text.png")
    assert "text.png" in str(error.value)


def test_predict_errors_for_missing_or_invalid_model_directory(tmp_path):
    with pytest.raises(RunError, match="does not exist") as error:
        predict(tmp_path / "saved_models" / "nothing" / "1", [tmp_path / "a.png"])
    assert "nothing" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a SavedModel") as error:
        predict(tmp_path / "empty", [tmp_path / "a.png"])
    assert str(tmp_path / "empty") in str(error.value)


# ------------------------------------------------------------------------ slow tests


@pytest.mark.slow
def test_serve_signature_reproduces_the_keras_model(run, exported):
    images, _ = _digits_uint8(32)
    x = (images[run.test[:64]] / 255.0).astype(np.float32)
    expected = run.model.predict(x, verbose=0)
    np.testing.assert_allclose(exported.loaded.serve(x).numpy(), expected, atol=1e-5)
    signature = exported.loaded.signatures["serve"]
    assert signature.structured_input_signature[1]["inputs"].shape.as_list() == [None, 32, 32, 1]
    np.testing.assert_allclose(signature(inputs=x)["output_0"].numpy(), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "height, width, channels", [(8, 8, 1), (50, 40, 3), (32, 32, 4), (24, 20, 2), (32, 32, 1)]
)
def test_serving_default_accepts_raw_images_of_any_size(run, exported, height, width, channels):
    digits8, _ = _digits_uint8(None)
    images = _variants(digits8[run.test[:40]], height, width, channels)
    outputs = exported.loaded.signatures["serving_default"](images=tf.constant(images))
    probabilities = outputs["probabilities"].numpy()
    expected = run.model.predict(_tf_reference(images), verbose=0)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"].numpy(), expected.argmax(axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    labels = [label.decode() for label in outputs["labels"].numpy()]
    assert labels == [CLASS_NAMES[c] for c in outputs["classes"].numpy()]
    assert outputs["classes"].dtype == tf.int64


@pytest.mark.slow
def test_metadata_and_labels_describe_the_export(run, exported):
    assert (exported.path / "assets" / "labels.txt").read_text().splitlines() == CLASS_NAMES
    meta = json.loads((exported.path / "metadata.json").read_text())
    assert meta["format"] == "savedmodel"
    assert meta["recipe"] == "tiny_digits" and meta["params"] == {"filters": [16, 32, 64]}
    assert meta["class_names"] == CLASS_NAMES and meta["num_classes"] == 10
    assert meta["input"] == {"shape": [None, 32, 32, 1], "dtype": "float32", "range": [0.0, 1.0]}
    assert meta["metrics"] == run.metrics
    assert meta["versions"]["keras"] == keras.__version__
    assert meta["versions"]["tensorflow"] == tf.__version__
    assert meta["versions"]["cnnbuilder"]
    # The checksum is of the weights actually exported: reloading the file gives it too.
    reloaded = keras.saving.load_model(run.dir / "model.keras")
    assert meta["weights_sha256"] == weights_checksum(run.model) == weights_checksum(reloaded)
    exported_at = datetime.datetime.fromisoformat(meta["exported_at"])
    assert exported_at.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - exported_at).total_seconds() < 3600
    assert set(meta["signatures"]) == {"serve", "serving_default"}
    summary = export_module.format_export_summary(exported.path)
    assert "tiny_digits" in summary and f"{run.metrics['test_accuracy']:.4f}" in summary
    # Only the version directory was created in the base path: no staging leftovers.
    assert sorted(p.name for p in exported.base.iterdir()) == ["1"]


@pytest.mark.slow
def test_existing_version_is_kept_unless_forced(run, tmp_path):
    version = tmp_path / "digits" / "3"
    export(run.model, version, class_names=CLASS_NAMES)
    (version / "marker").write_text("first export")
    with pytest.raises(RunError, match="already exists") as error:
        export(run.model, version)
    assert str(version) in str(error.value)
    assert (version / "marker").read_text() == "first export"
    export(run.model, version, force=True)
    assert not (version / "marker").exists()
    assert (version / "saved_model.pb").is_file()
    # Without run.json or class_names the labels are the class indices.
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["recipe"] is None
    assert sorted(p.name for p in version.parent.iterdir()) == ["3"]


@pytest.mark.slow
def test_failed_export_leaves_no_partial_version(run, tmp_path, monkeypatch):
    def crash(model, path, *args, **kwargs):
        (path / "saved_model.pb").write_bytes(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_write_saved_model", crash)
    base = tmp_path / "digits"
    with pytest.raises(RuntimeError, match="disk full"):
        export(run.model, base / "1")
    assert list(base.iterdir()) == []
    # A forced replacement that fails leaves the previous version as it was.
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"previous version")
    with pytest.raises(RuntimeError, match="disk full"):
        export(run.model, base / "2", force=True)
    assert sorted(p.name for p in base.iterdir()) == ["2"]
    assert (base / "2" / "saved_model.pb").read_bytes() == b"previous version"


@pytest.mark.slow
def test_version_created_meanwhile_is_not_overwritten(run, tmp_path, monkeypatch):
    """Another exporter publishing the same version while this one writes wins."""
    write = export_module._write_saved_model

    def write_while_another_export_publishes(model, path, *args, **kwargs):
        details = write(model, path, *args, **kwargs)
        (path.parent / "1").mkdir()
        (path.parent / "1" / "saved_model.pb").write_bytes(b"the other export")
        return details

    monkeypatch.setattr(export_module, "_write_saved_model", write_while_another_export_publishes)
    base = tmp_path / "digits"
    with pytest.raises(RunError, match="already exists"):
        export(run.model, base / "1")
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the other export"


@pytest.mark.slow
def test_litert_export_agrees_with_keras(run, tmp_path):
    version = export(run.dir, tmp_path / "digits_lite" / "1", format="litert")
    assert sorted(p.name for p in version.iterdir()) == ["labels.txt", "metadata.json", "model.tflite"]
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["format"] == "litert" and meta["class_names"] == CLASS_NAMES
    assert 0.0 <= meta["litert"]["max_abs_diff"] <= 1e-4
    # An independent check on real digits, with a batch size the converter never saw.
    images, _ = _digits_uint8(32)
    x = (images[run.test[:7]] / 255.0).astype(np.float32)
    outputs, _ = export_module._run_litert(version / "model.tflite", x)
    np.testing.assert_allclose(outputs, run.model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_predict_on_png_files_matches_the_keras_model(run, exported, tmp_path):
    digits8, labels = _digits_uint8(None)
    paths, arrays = [], []
    for n, index in enumerate(run.test[:60]):
        image = Image.fromarray(digits8[index, :, :, 0], "L").resize((24, 24), Image.NEAREST)
        if n % 3 == 2:  # a third as RGB files
            image = image.convert("RGB")
        path = tmp_path / f"digit_{n:02d}_{image.mode}.png"
        image.save(path)
        paths.append(path)
        arrays.append(np.asarray(image).reshape(24, 24, -1))
    results = predict(exported.path, paths, top_k=3)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    for result in results:
        probabilities = [p["probability"] for p in result["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    predicted = np.array([CLASS_NAMES.index(r["predictions"][0]["label"]) for r in results])
    grey = [a for a in arrays if a.shape[-1] == 1]
    colour = [a for a in arrays if a.shape[-1] == 3]
    x = np.empty((len(arrays), *INPUT_SHAPE), np.float32)
    is_grey = np.array([a.shape[-1] == 1 for a in arrays])
    x[is_grey] = _np_preprocess(np.stack(grey))
    x[~is_grey] = _np_preprocess(np.stack(colour))
    expected = run.model.predict(x, verbose=0)
    truth = labels[run.test[:60]]
    assert (predicted == truth).mean() == (expected.argmax(axis=1) == truth).mean()
    np.testing.assert_array_equal(predicted, expected.argmax(axis=1))
    top1 = np.array([r["predictions"][0]["probability"] for r in results])
    np.testing.assert_allclose(top1, expected.max(axis=1), atol=1e-4)
    # The base path resolves to its highest version, like TF Serving.
    # (Labels compared exactly; probabilities only closely: batch size changes rounding.)
    for again, first in zip(predict(exported.base, paths[:2], top_k=3), results):
        assert [p["label"] for p in again["predictions"]] == [p["label"] for p in first["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in again["predictions"]],
                                   [p["probability"] for p in first["predictions"]], atol=1e-5)
    text = format_predictions(results[:2])
    assert paths[0].name in text and results[0]["predictions"][0]["label"] in text and "%" in text


@pytest.mark.slow
def test_predict_names_a_missing_image(exported, tmp_path):
    with pytest.raises(DataError, match="does not exist") as error:
        predict(exported.path, [tmp_path / "nope.png"])
    assert "nope.png" in str(error.value)


@pytest.mark.slow
def test_predict_refuses_a_savedmodel_without_image_signature(run, tmp_path):
    run.model.export(tmp_path / "plain", verbose=False)  # Keras' own export: float input
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "a.png")
    with pytest.raises(RunError, match="uint8 images"):
        predict(tmp_path / "plain", [tmp_path / "a.png"])
