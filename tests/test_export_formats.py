"""ONNX and quantized LiteRT exports, the model card, one `predict` for all three formats,
and the refusals of bad export and predict requests.

One small classifier is trained once on the digits and written as a run directory whose
run.json names the ``digits`` dataset, so the exports check, calibrate and score on the
run's own data as they do for a run of `cnnbuilder train`.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from PIL import Image

import keras

from cnnbuilder import cli
from cnnbuilder.data import load_dataset, make_pipeline, preprocessing_config
from cnnbuilder.errors import ExportError, RunError
from cnnbuilder.recipe.training import training_config
from cnnbuilder.recipe.training_plan import describe
from cnnbuilder.serving import litert as litert_module
from cnnbuilder.serving.exporting import export
from cnnbuilder.serving.litert import litert_interpreter, run_litert
from cnnbuilder.serving.onnx_export import run_onnx
from cnnbuilder.serving.prediction import predict

INPUT_SHAPE = (16, 16, 1)
CLASS_NAMES = [f"digit {i}" for i in range(10)]


def _test_inputs(limit=None):
    """(float model input, labels) of the digits test split, as the pipeline makes them."""
    data = load_dataset("digits")
    x, y = data.test
    batch = next(iter(make_pipeline((x[:limit], y[:limit]), input_shape=INPUT_SHAPE,
                                    batch_size=len(x), training=False)))
    return batch[0].numpy(), batch[1].numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained digits classifier as a run directory (model.keras, run.json, metrics.json)."""
    keras.utils.set_random_seed(0)
    data = load_dataset("digits")
    train = make_pipeline(data.train, input_shape=INPUT_SHAPE, batch_size=32, training=True)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="small")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, epochs=4, verbose=0)
    x_test, y_test = _test_inputs()
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.6, f"test model too weak to test with: accuracy {accuracy}"
    directory = tmp_path_factory.mktemp("run")
    model.save(directory / "model.keras")
    # The paper's training (a recipe's training: section) and the run's, as train records them.
    paper = {"source": "A. Paper 2020, Section 4", "optimizer": "adam", "learning_rate": 0.01,
             "epochs": 90, "dataset": "cifar10", "dataset_size": 45000, "augment": ["crop", "flip"],
             "weight_decay": 0.0}
    resolved = describe(paper, name="small", overrides={"epochs": 4}, dataset="digits",
                        steps_per_epoch=40)
    (directory / "run.json").write_text(json.dumps({
        "recipe": "small", "dataset": "digits", "class_names": CLASS_NAMES,
        "preprocessing": preprocessing_config(INPUT_SHAPE),
        "training": training_config(paper, epochs=4).to_dict(), "seed": 0,
        "augment": ["translate"], "sizes": {"train": 1257, "validation": 180, "test": 360},
        "resolved_training": resolved,
    }))
    metrics = {"test_accuracy": accuracy, "test_loss": loss, "epochs_run": 4}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return types.SimpleNamespace(dir=directory, model=model, metrics=metrics,
                                 x_test=x_test, y_test=y_test)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """PNG files of test digits at 24x24, grey and RGB."""
    data = load_dataset("digits")
    directory = tmp_path_factory.mktemp("images")
    paths = []
    for n, image in enumerate(data.test[0][:6]):
        picture = Image.fromarray(image[..., 0]).resize((24, 24))
        if n % 2:
            picture = picture.convert("RGB")
        paths.append(directory / f"digit_{n}.png")
        picture.save(paths[-1])
    return paths


def _meta(directory):
    return json.loads((directory / "metadata.json").read_text())


# ------------------------------------------------------------------------ fast tests


@pytest.mark.parametrize("kwargs, match", [
    (dict(format="litert", quantize="int4"), "Unknown quantization 'int4'"),
    (dict(format="onnx", quantize="int8"), "onnx format cannot be quantized"),
    (dict(quantize="float16"), "savedmodel format cannot be quantized"),
    (dict(format="savedmodel", directory="out/model.onnx"), "names a .onnx file"),
    (dict(format="litert", max_accuracy_drop=-1), "percentage points"),
])
def test_bad_export_requests_are_refused_before_anything_is_read(tmp_path, kwargs, match):
    directory = tmp_path / kwargs.pop("directory", "models/x/1")
    with pytest.raises(ExportError, match=match):
        export(tmp_path / "no-such-run", directory, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_file_export_never_takes_over_a_directory_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(RunError, match="other files"):
            export(tmp_path / "no-such-run", tmp_path / "model.onnx", force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_predict_refuses_files_of_no_export_format(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04")
    (tmp_path / "fake.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(RunError, match="none of the three export formats"):
        predict(tmp_path / "model.keras", [tmp_path / "a.png"])
    with pytest.raises(RunError, match="not a LiteRT flatbuffer"):
        predict(tmp_path / "fake.tflite", [tmp_path / "a.png"])


def test_cli_names_a_bad_quantization_in_one_paragraph(tmp_path, capsys):
    status = cli.main(["export", str(tmp_path), "--output", str(tmp_path / "m.onnx"),
                       "--quantize", "int8"])
    err = capsys.readouterr().err.strip()
    assert status == cli.BAD_INPUT and "\n" not in err
    assert "onnx format cannot be quantized" in err and "--format litert" in err
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------ slow tests


@pytest.mark.slow
def test_onnx_export_reproduces_keras_and_predicts_as_the_savedmodel(run, images, tmp_path):
    path = export(run.dir, tmp_path / "onnx" / "model.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "README.md", "labels.txt", "metadata.json", "model.onnx"]
    meta = _meta(path.parent)
    assert meta["format"] == "onnx" and meta["preprocessing"] == preprocessing_config(INPUT_SHAPE)
    check = meta["onnx"]["check"]
    assert check["images"] == 32 and "digits" in check["of"] and check["max_abs_diff"] <= 1e-4
    # Independently: a batch size the check never used, on the whole test split.
    outputs, _ = run_onnx(path, run.x_test[:45])
    np.testing.assert_allclose(outputs, run.model.predict(run.x_test[:45], verbose=0), atol=1e-4)
    saved = export(run.dir, tmp_path / "sm" / "1")
    by_onnx, by_saved_model = predict(path, images, top_k=3), predict(saved, images, top_k=3)
    for a, b in zip(by_onnx, by_saved_model):
        assert a["image"] == b["image"]
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in a["predictions"]],
                                   [p["probability"] for p in b["predictions"]], atol=1e-4)
    assert by_onnx[0]["predictions"][0]["label"] in CLASS_NAMES
    # The directory holding the file (a version directory) predicts the same.
    assert predict(path.parent, images[:1], top_k=3)[0]["image"] == str(images[0])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "int8"])
def test_quantized_litert_is_smaller_and_scored_on_the_test_split(run, images, tmp_path, mode):
    float_file = export(run.dir, tmp_path / "float" / "model.tflite")
    path = export(run.dir, tmp_path / mode / "model.tflite", quantize=mode)
    assert path.stat().st_size < 0.5 * float_file.stat().st_size
    quantization = _meta(path.parent)["litert"]["quantization"]
    assert quantization["mode"] == mode
    accuracy = quantization["accuracy"]
    assert accuracy["examples"] == len(run.y_test)
    keras_accuracy = float(np.mean(run.model.predict(run.x_test, verbose=0).argmax(1) == run.y_test))
    assert accuracy["keras"] == pytest.approx(keras_accuracy)
    exported = float(np.mean(run_litert(path, run.x_test)[0].argmax(1) == run.y_test))
    assert accuracy["exported"] == pytest.approx(exported)
    assert accuracy["drop_points"] <= 2.0
    interpreter, _ = litert_interpreter(path)
    kinds = {str(t["dtype"].__name__) for t in interpreter.get_tensor_details()}
    assert "int8" in kinds
    if mode == "int8":
        assert quantization["calibration"]["split"] == "train"
        assert quantization["calibration"]["examples"] == 200
    top = predict(path, images, top_k=1)
    reference = predict(float_file, images, top_k=1)
    agree = np.mean([a["predictions"][0]["label"] == b["predictions"][0]["label"]
                     for a, b in zip(top, reference)])
    assert agree >= 0.8


@pytest.mark.slow
def test_a_quantized_file_losing_accuracy_fails_and_writes_nothing(run, tmp_path, monkeypatch):
    real = litert_module.run_litert

    def damaged(model_path, batch):  # every image scored as class 0
        outputs, runtime = real(model_path, batch)
        return np.eye(outputs.shape[1])[np.zeros(len(batch), int)].astype(np.float32), runtime

    monkeypatch.setattr(litert_module, "run_litert", damaged)
    with pytest.raises(ExportError, match="points below the Keras model"):
        export(run.dir, tmp_path / "lite" / "1", format="litert", quantize="float16")
    assert not (tmp_path / "lite").exists()  # nothing written, not even the base path


@pytest.mark.slow
def test_the_model_card_describes_the_export(run, tmp_path):
    path = export(run.dir, tmp_path / "cards" / "1", format="litert", quantize="float16")
    card = (path / "README.md").read_text()
    meta = _meta(path)
    assert card.startswith("---\nlibrary_name: keras\n")
    for heading in ("## Model description", "## Training data", "## Training procedure",
                    "## Evaluation results", "## Preprocessing", "## How to use",
                    "## Intended uses and limitations"):
        assert heading in card
    assert f"Parameters: {run.model.count_params():,}" in card
    assert f"accuracy {run.metrics['test_accuracy']:.4f}" in card
    assert f"accuracy {meta['litert']['quantization']['accuracy']['exported']:.4f}" in card
    assert "digit 9" in card and "16×16" in card
    run_part, reference = card.split("## Training procedure")[1].split("Reference, not this run")
    # What the run did: its dataset and sizes, augmentation and settings as resolved...
    assert "dataset: digits (1,257 train, 180 validation, 360 test images)" in run_part
    assert "augmentation: translate" in run_part and "learning rate 0.01" in run_part
    assert "planned length 4 epochs" in run_part and "cifar10" not in run_part
    # ...and the paper's training only as the labelled reference, with the departures.
    assert "A. Paper 2020, Section 4" in reference and "cifar10 (45,000 training images)" in reference
    assert "augmentation crop, flip" in reference and "Where this run departs from it" in reference
    assert "epochs: 4 (override; the recipe: 90 epochs)" in reference
    assert meta["training"]["dataset"] == "digits" and meta["training"]["reference"]["dataset"] == "cifar10"
    assert "README.md" in meta["files"]


@pytest.mark.slow
def test_an_existing_file_export_is_replaced_only_with_force(run, tmp_path):
    path = export(run.dir, tmp_path / "onnx" / "model.onnx")
    (path.parent / "marker").write_text("first")
    with pytest.raises(RunError, match="already holds an export"):
        export(run.dir, path)
    assert (path.parent / "marker").exists()
    export(run.dir, path, force=True)
    assert not (path.parent / "marker").exists() and path.is_file()
