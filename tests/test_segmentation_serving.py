"""Exporting and predicting with a segmentation model, and its figure.

A tiny fully convolutional network (conv, pool, conv, bilinear upsampling, 1x1 softmax:
per-pixel class probabilities at the input's size) is built by hand, saved as a run
directory whose run.json says ``task: segmentation`` and whose metrics.json holds the
segmentation metrics, and as a bare .keras file (told apart by its 4-D output). The
SavedModel's ``serving_default`` must give class maps at the size of raw images of two
different sizes, equal to Keras' probabilities resized back and argmaxed; LiteRT and ONNX
must reproduce Keras; `predict --output` must write palette PNG masks equal to the
argmax and the class areas.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras

from cnnbuilder import cli
from cnnbuilder.data import preprocess_from_config, preprocessing_config
from cnnbuilder.errors import CnnBuilderError, ExportError
from cnnbuilder.plots.segmentation import palette, segmentation_figure
from cnnbuilder.serving.exporting import export
from cnnbuilder.serving.litert import run_litert
from cnnbuilder.serving.onnx_export import run_onnx
from cnnbuilder.serving.prediction import predict

INPUT_SHAPE = (32, 32, 3)
CLASS_NAMES = ["background", "cat", "dog"]
SIZES = [(20, 28), (45, 37)]  # raw image sizes (height, width), neither the model's


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
    outputs = keras.layers.Conv2D(len(CLASS_NAMES), 1, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_seg")


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """The model, its run directory, a bare .keras copy, its SavedModel export and images."""
    model = _model()
    root = tmp_path_factory.mktemp("seg")
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    model.save(root / "bare.keras")
    (run / "run.json").write_text(json.dumps({
        "task": "segmentation", "class_names": CLASS_NAMES, "recipe": None,
        "preprocessing": preprocessing_config(INPUT_SHAPE)}))
    metrics = {"test_loss": 0.5, "test_mean_iou": 0.625, "test_pixel_accuracy": 0.875,
               "test_iou_per_class": {"background": 0.9, "cat": 0.6, "dog": None}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(1)
    images = []
    for n, (height, width) in enumerate(SIZES):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images.append(root / f"image_{n}.png")
        Image.fromarray(array).save(images[-1])
    saved = export(run, root / "export" / "1")
    return types.SimpleNamespace(model=model, run=run, bare=root / "bare.keras", root=root,
                                 saved=saved, images=images)


def _expected_classes(model, image: np.ndarray) -> np.ndarray:
    """Keras' probabilities of the preprocessed image, resized bilinearly back to the
    image's size, argmax: what the signature must return."""
    x = preprocess_from_config(image[np.newaxis], preprocessing_config(INPUT_SHAPE))
    probabilities = model(x, training=False)
    resized = tf.image.resize(probabilities, image.shape[:2], method="bilinear")
    return np.argmax(resized.numpy()[0], axis=-1)


@pytest.mark.slow
def test_saved_model_returns_class_maps_at_the_raw_images_size(seg):
    meta = json.loads((seg.saved / "metadata.json").read_text())
    assert meta["task"] == "segmentation" and meta["class_names"] == CLASS_NAMES
    assert meta["signatures"]["serving_default"]["outputs"]["classes"]["shape"] == [None, None, None]
    signature = tf.saved_model.load(str(seg.saved)).signatures["serving_default"]
    for path, (height, width) in zip(seg.images, SIZES):
        image = np.asarray(Image.open(path))
        out = signature(images=tf.constant(image[np.newaxis]))
        assert out["classes"].shape == (1, height, width)
        assert out["probabilities"].shape == (1, height, width, len(CLASS_NAMES))
        np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
        expected = _expected_classes(seg.model, image)
        assert np.mean(out["classes"].numpy()[0] == expected) > 0.999


@pytest.mark.slow
def test_model_card_reports_mean_and_per_class_iou(seg):
    card = (seg.saved / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card
    assert "mean IoU 0.6250" in card and "pixel accuracy 0.8750" in card
    assert "| cat | 0.6000 |" in card and "| dog | — |" in card
    assert "--output masks/" in card


@pytest.mark.slow
def test_predict_writes_palette_masks_equal_to_the_argmax(seg, tmp_path):
    results = predict(seg.saved, seg.images, output=tmp_path / "masks")
    for result, path, (height, width) in zip(results, seg.images, SIZES):
        mask_file = tmp_path / "masks" / f"{path.stem}.png"
        assert result["mask"] == str(mask_file) and result["size"] == [height, width]
        mask = Image.open(mask_file)
        assert mask.mode == "P"
        assert mask.getpalette()[:9] == palette(3).reshape(-1).tolist()
        classes = np.asarray(mask)
        expected = _expected_classes(seg.model, np.asarray(Image.open(path)))
        assert classes.shape == (height, width) and np.mean(classes == expected) > 0.999
        areas = json.loads((tmp_path / "masks" / f"{path.stem}.json").read_text())["areas"]
        assert areas == result["areas"] and list(areas) == CLASS_NAMES
        for index, name in enumerate(CLASS_NAMES):
            assert areas[name]["pixels"] == int(np.sum(classes == index))
            assert areas[name]["fraction"] == pytest.approx(np.mean(classes == index))
    # Without --output: the areas, no files.
    plain = predict(seg.saved, seg.images[:1])
    assert plain[0]["areas"] == results[0]["areas"] and "mask" not in plain[0]


@pytest.mark.slow
def test_litert_and_onnx_exports_reproduce_keras_and_predict_the_same_masks(seg, tmp_path):
    saved_maps = [np.asarray(Image.open(r["mask"])) for r in
                  predict(seg.saved, seg.images, output=tmp_path / "saved")]
    batch = np.random.default_rng(3).random((3, *INPUT_SHAPE), dtype=np.float32)
    keras_out = seg.model.predict(batch, verbose=0)
    for fmt, file, runner in (("litert", "model.tflite", run_litert), ("onnx", "model.onnx", run_onnx)):
        path = export(seg.bare, tmp_path / fmt / file)  # a bare .keras: told by its 4-D output
        meta = json.loads((path.parent / "metadata.json").read_text())
        assert meta["task"] == "segmentation" and meta["format"] == fmt
        assert meta[fmt]["output"]["shape"] == [None, *INPUT_SHAPE[:2], len(CLASS_NAMES)]
        out, _ = runner(path, batch)
        np.testing.assert_allclose(out, keras_out, atol=1e-4)
        maps = [np.asarray(Image.open(r["mask"])) for r in
                predict(path, seg.images, output=tmp_path / f"{fmt}-masks")]
        for a, b in zip(maps, saved_maps):
            assert a.shape == b.shape and np.mean(a == b) > 0.999


@pytest.mark.slow
def test_cli_predict_output_and_refusals(seg, tmp_path, capsys):
    code = cli.main(["predict", str(seg.saved), str(seg.images[0]), "--output", str(tmp_path / "m")])
    assert code == 0 and (tmp_path / "m" / f"{seg.images[0].stem}.png").is_file()
    assert "%" in capsys.readouterr().out
    assert cli.main(["export", str(seg.run), "--output", str(tmp_path / "e" / "1")]) == 0
    summary = capsys.readouterr().out
    assert "test mean IoU 0.6250" in summary and "class map" in summary
    # Two images whose masks would share a name, and a quantized segmentation export.
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / seg.images[0].name
    twin.write_bytes(seg.images[0].read_bytes())
    with pytest.raises(CnnBuilderError, match="would both write"):
        predict(seg.saved, [seg.images[0], twin], output=tmp_path / "m2")
    with pytest.raises(ExportError, match="not available for segmentation"):
        export(seg.run, tmp_path / "q" / "model.tflite", quantize="dynamic")
    # A centre-cropping preprocessing record: the class map could not be put back.
    cropped = tmp_path / "cropped"
    cropped.mkdir()
    seg.model.save(cropped / "model.keras")
    (cropped / "run.json").write_text(json.dumps({
        "task": "segmentation", "preprocessing": preprocessing_config(INPUT_SHAPE, crop_from=40)}))
    with pytest.raises(ExportError, match="centre-crops"):
        export(cropped, tmp_path / "c" / "1")
    assert not (tmp_path / "c" / "1").exists()


def test_segmentation_figure_draws_images_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((5, 16, 16, 3)).astype(np.float32)
    true = rng.integers(0, 3, (5, 16, 16))
    predicted = rng.integers(0, 3, (5, 16, 16))
    figure = segmentation_figure(images, true, predicted, CLASS_NAMES, max_images=3)
    axes = [axis for axis in figure.axes if axis.images]
    assert len(axes) == 9  # 3 images x (image, true, predicted)
    # The true-mask panel shows the palette colours of the labels.
    shown = np.asarray(axes[1].images[0].get_array())
    np.testing.assert_array_equal(shown, palette(3)[true[0]])
    assert [t.get_text() for t in figure.legends[0].get_texts()] == CLASS_NAMES
    figure.savefig(tmp_path / "segmentation.png")
    assert (tmp_path / "segmentation.png").stat().st_size > 0
    with pytest.raises(ValueError):
        segmentation_figure(images[:2], true[:1], predicted[:2], CLASS_NAMES)


def test_ignored_pixels_are_drawn_apart_from_every_class():
    from cnnbuilder.plots.segmentation import VOID_COLOUR, colour_masks

    coloured = colour_masks(np.array([[-1, 0, 1, 2]]), 3)
    assert tuple(coloured[0, 0]) == VOID_COLOUR
    assert all(tuple(coloured[0, i]) != VOID_COLOUR for i in (1, 2, 3))
    assert len({tuple(c) for c in coloured[0]}) == 4
