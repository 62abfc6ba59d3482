"""Issue 23, predict on foreign model files: a SavedModel runs only when `cnnbuilder
export` wrote its files (or with --trust: it is a program, like a pickle), and any
model file's input and outputs are checked against its metadata.json before it runs."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnbuilder.cli import main
from cnnbuilder.data.preprocess import preprocessing_config
from cnnbuilder.errors import RunError
from cnnbuilder.serving.foreign import DIGEST_KEY
from cnnbuilder.serving.prediction import predict
from cnnbuilder.serving.saved_model import write_saved_model

SHAPE = (8, 8, 1)


def tiny_model(classes=3, shape=SHAPE):
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def write_metadata(directory, shape=SHAPE, classes=3, **extra):
    meta = {"num_classes": classes, "class_names": [f"c{i}" for i in range(classes)],
            "preprocessing": preprocessing_config(shape, normalization="unit"), **extra}
    (directory / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(path)
    return path


@pytest.fixture
def exported(tmp_path):
    """A SavedModel as `cnnbuilder export` writes it (its digest in metadata.json)."""
    directory = tmp_path / "export"
    details = write_saved_model(tiny_model(), directory, ["c0", "c1", "c2"], SHAPE,
                                preprocessing_config(SHAPE, normalization="unit"))
    write_metadata(directory, **{DIGEST_KEY: details[DIGEST_KEY]})
    return directory


def test_an_export_of_cnnbuilder_predicts(exported, image):
    [result] = predict(exported, [image], top_k=2)
    assert [p["label"] for p in result["predictions"]][0] in ("c0", "c1", "c2")


def test_a_changed_savedmodel_is_refused_unless_trusted(exported, image, capsys):
    (exported / "assets" / "extra.txt").write_text("added after the export")
    with pytest.raises(RunError, match="its files differ from the digest"):
        predict(exported, [image])
    code = main(["predict", str(exported), str(image)])
    err = capsys.readouterr().err
    assert code == 2 and "--trust" in err and "program, like a pickle" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert predict(exported, [image], trust=True)[0]["predictions"]


class Crafted(tf.Module):
    """A SavedModel whose serving_default writes a file when called."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)])
    def serving_default(self, images):
        tf.io.write_file(self.target, "written by a foreign graph")
        batch = tf.shape(images)[0]
        return {"probabilities": tf.ones((batch, 3)) / 3.0}


def test_a_foreign_savedmodel_never_runs_without_trust(tmp_path, image):
    target = tmp_path / "stolen.txt"
    directory = tmp_path / "foreign"
    module = Crafted(str(target))
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serving_default})
    write_metadata(directory)  # beside it, but without the digest of its files
    with pytest.raises(RunError, match="metadata.json records no digest"):
        predict(directory, [image])
    assert not target.exists()  # nothing of the graph ran


def test_a_savedmodel_without_probabilities_is_one_paragraph(tmp_path, image, capsys):
    class NoProbabilities(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)])
        def serving_default(self, images):
            return {"scores": tf.cast(images[:, 0, 0, :], tf.float32)}

    module, directory = NoProbabilities(), tmp_path / "other"
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serving_default})
    code = main(["predict", str(directory), str(image), "--trust"])
    err = capsys.readouterr().err
    assert code == 2 and "no 'probabilities' output" in err and "scores" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_tflite_file_of_another_input_shape_is_refused_before_running(tmp_path, image, capsys):
    directory = tmp_path / "lite"
    directory.mkdir()
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model(shape=(4, 4, 1)))
    (directory / "model.tflite").write_bytes(converter.convert())
    write_metadata(directory, shape=SHAPE)
    code = main(["predict", str(directory / "model.tflite"), str(image)])
    err = capsys.readouterr().err
    assert code == 2 and "does not match the metadata.json" in err
    assert "[8, 8, 1]" in err and len(err.strip().splitlines()) == 1


def test_a_tflite_file_of_other_classes_is_refused(tmp_path, image):
    directory = tmp_path / "lite"
    directory.mkdir()
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model(classes=5))
    (directory / "model.tflite").write_bytes(converter.convert())
    write_metadata(directory, classes=3)
    with pytest.raises(RunError, match="outputs 5 values per image, but metadata.json records 3"):
        predict(directory / "model.tflite", [image])


def test_a_matching_tflite_file_predicts_without_the_runtimes_log_lines(tmp_path, image, capfd):
    directory = tmp_path / "lite"
    directory.mkdir()
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model())
    (directory / "model.tflite").write_bytes(converter.convert())
    write_metadata(directory)
    capfd.readouterr()
    assert main(["predict", str(directory / "model.tflite"), str(image)]) == 0
    out, err = capfd.readouterr()
    assert "c0" in out and "XNNPACK" not in err and "INFO:" not in err
