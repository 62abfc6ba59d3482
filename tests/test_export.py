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

from cnnbuilder.data import make_pipeline, preprocessing_config
from cnnbuilder.errors import DataError, ExportError, RunError
from cnnbuilder.serving import exporting as export_module
from cnnbuilder.serving.exporting import export, weights_checksum
from cnnbuilder.serving.litert import run_litert
from cnnbuilder.serving.prediction import format_predictions, predict, read_image
from cnnbuilder.serving.source import Source, recorded_preprocessing

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
        "preprocessing": preprocessing_config(INPUT_SHAPE),
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
    with pytest.raises(ExportError, match="litert, onnx"):
        export(tmp_path, tmp_path / "models" / "x" / "1", format="torchscript")


def test_a_run_without_preprocessing_record_or_with_the_former_one_is_unit(tmp_path):
    unit = preprocessing_config(INPUT_SHAPE)
    assert recorded_preprocessing(Source(model=None), INPUT_SHAPE) == unit
    former = {"scale": 255.0, "resize": "bilinear", "channels": 1}
    source = Source(model=None, path=tmp_path, directory=tmp_path, preprocessing=former)
    assert recorded_preprocessing(source, INPUT_SHAPE) == unit
    torch = preprocessing_config((32, 32, 3), "torch")
    source = Source(model=None, path=tmp_path, directory=tmp_path, preprocessing=torch)
    assert recorded_preprocessing(source, (32, 32, 3)) == torch


def test_a_malformed_preprocessing_record_names_run_json(tmp_path):
    record = {**preprocessing_config(INPUT_SHAPE), "resize": "nearest"}
    source = Source(model=None, path=tmp_path, directory=tmp_path, preprocessing=record)
    with pytest.raises(RunError, match="resize") as error:
        recorded_preprocessing(source, INPUT_SHAPE)
    assert str(tmp_path / "run.json") in str(error.value)
    source.preprocessing = preprocessing_config((16, 16, 1))
    with pytest.raises(RunError, match="input shape"):
        recorded_preprocessing(source, INPUT_SHAPE)


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
    # What the training pipeline feeds the model: the signature calls the same function.
    pipeline = make_pipeline((images, np.zeros(len(images), np.int64)), input_shape=INPUT_SHAPE,
                             batch_size=len(images), training=False)
    expected = run.model.predict(pipeline.map(lambda x, y: x), verbose=0)
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
    assert meta["preprocessing"] == preprocessing_config(INPUT_SHAPE)
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
    assert "[0, 1] (unit normalization)" in summary
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

    monkeypatch.setattr(export_module, "write_saved_model", crash)
    base = tmp_path / "digits"
    with pytest.raises(RuntimeError, match="disk full"):
        export(run.model, base / "1")
    assert not base.exists()  # the failed export removed the base path it had created
    # A forced replacement that fails leaves the previous version as it was.
    (base / "2").mkdir(parents=True)
    (base / "2" / "saved_model.pb").write_bytes(b"previous version")
    with pytest.raises(RuntimeError, match="disk full"):
        export(run.model, base / "2", force=True)
    assert sorted(p.name for p in base.iterdir()) == ["2"]
    assert (base / "2" / "saved_model.pb").read_bytes() == b"previous version"


@pytest.mark.slow
def test_version_created_meanwhile_is_not_overwritten(run, tmp_path, monkeypatch):
    """Another exporter publishing the same version while this one writes wins."""
    write = export_module.write_saved_model

    def write_while_another_export_publishes(model, path, *args, **kwargs):
        details = write(model, path, *args, **kwargs)
        (path.parent / "1").mkdir()
        (path.parent / "1" / "saved_model.pb").write_bytes(b"the other export")
        return details

    monkeypatch.setattr(export_module, "write_saved_model", write_while_another_export_publishes)
    base = tmp_path / "digits"
    with pytest.raises(RunError, match="already exists"):
        export(run.model, base / "1")
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the other export"


@pytest.mark.slow
def test_litert_export_agrees_with_keras(run, tmp_path):
    version = export(run.dir, tmp_path / "digits_lite" / "1", format="litert")
    assert sorted(p.name for p in version.iterdir()) == [
        "README.md", "labels.txt", "metadata.json", "model.tflite"]
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["format"] == "litert" and meta["class_names"] == CLASS_NAMES
    assert 0.0 <= meta["litert"]["max_abs_diff"] <= 1e-4
    # An independent check on real digits, with a batch size the converter never saw.
    images, _ = _digits_uint8(32)
    x = (images[run.test[:7]] / 255.0).astype(np.float32)
    outputs, _ = run_litert(version / "model.tflite", x)
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
    with pytest.raises(RunError, match="not written by `cnnbuilder export`.*--trust"):
        predict(tmp_path / "plain", [tmp_path / "a.png"])  # a program we did not write
    with pytest.raises(RunError, match="uint8 images"):
        predict(tmp_path / "plain", [tmp_path / "a.png"], trust=True)


@pytest.mark.slow
@pytest.mark.parametrize(("normalization", "stats"), [
    ("torch", {}),
    # The training split's channel statistics of a `dataset` run travel in its record.
    ("dataset", {"mean": [0.3, 0.45, 0.6], "std": [0.2, 0.25, 0.3]}),
])
def test_serving_default_gives_the_pipeline_numbers_for_the_recorded_normalization(
        tmp_path, normalization, stats):
    """A "classifier" that only flattens its input outputs the preprocessed pixels, so the
    signature's preprocessing can be compared with the pipeline's exactly."""
    input_shape = (8, 8, 3)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, keras.layers.Flatten()(inputs), name="pixels")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    record = preprocessing_config(input_shape, normalization, **stats)
    (run_dir / "run.json").write_text(json.dumps({"preprocessing": record}))
    version = export(run_dir, tmp_path / "pixels" / "1")
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["preprocessing"] == record
    low, high = metadata["input"]["range"]
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    rng = np.random.default_rng(7)
    for height, width in [(5, 7), (20, 12), (8, 8)]:
        for channels in (1, 2, 3, 4):
            images = rng.integers(0, 256, (3, height, width, channels), dtype=np.uint8)
            served = signature(images=tf.constant(images))["probabilities"].numpy()
            pipeline = make_pipeline((images, np.zeros(3, np.int64)), input_shape=input_shape,
                                     batch_size=3, training=False,
                                     normalization=normalization, **stats)
            trained_on = next(iter(pipeline))[0].numpy().reshape(3, -1)
            np.testing.assert_array_equal(served, trained_on, err_msg=f"{images.shape}")
            assert low - 1e-6 <= served.min() and served.max() <= high + 1e-6


@pytest.mark.slow
def test_predict_reports_bad_images_by_name_and_still_predicts_the_good_ones(exported, tmp_path, capsys):
    """Issue 17: images are untrusted input. The CLI predicts every readable image,
    names each bad one (missing, not an image, truncated, a decompression bomb) and
    exits 2; the Python API raises by default and reports with errors="report"."""
    from cnnbuilder.cli import main
    from cnnbuilder.data.image_checks import MAX_IMAGE_PIXELS

    good = tmp_path / "good.png"
    Image.fromarray(np.full((12, 9), 200, np.uint8), "L").save(good)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated, "JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    bomb = tmp_path / "bomb.png"
    side = int(MAX_IMAGE_PIXELS**0.5) + 8
    Image.new("1", (side, side)).save(bomb)  # a few kB on disk, too many pixels to decode
    missing = tmp_path / "missing.png"
    paths = [good, not_image, truncated, bomb, missing, good]

    with pytest.raises(DataError, match="notes.png"):
        predict(exported.path, paths)
    results = predict(exported.path, paths, errors="report")
    assert [("predictions" in r, "error" in r) for r in results] == [
        (True, False), (False, True), (False, True), (False, True), (False, True), (True, False)]
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert "more than the" in results[3]["error"] and "does not exist" in results[4]["error"]

    code = main(["predict", str(exported.path), *map(str, paths), "--top-k", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert out.count("1. ") == 2  # both good images were predicted
    for path in paths[1:5]:
        assert path.name in err


def test_an_export_reloads_the_run_s_dataset_with_the_run_s_splits():
    """run.json's data_options (split fractions...) reach the export's check, so it
    scores the run's own test split, not the default one."""
    from cnnbuilder.data import load_dataset, preprocessing_config
    from cnnbuilder.serving.run_data import RunData

    options = {"data_dir": None, "validation_split": 0.1, "test_split": 0.3,
               "skip_bad_images": False}
    reloaded = RunData("digits", preprocessing_config((32, 32, 1)), options=options).dataset()
    assert reloaded.sizes == load_dataset("digits", test_split=0.3).sizes
    assert reloaded.sizes["test"] != load_dataset("digits").sizes["test"]
