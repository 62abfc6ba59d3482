"""Issue 23, data at the edge: labels within 0..classes-1 with two classes present (arrays
and folders), class names that export, no output inside a folder dataset, and one image
decoder for training and predict that turns phone photos upright (EXIF orientation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cnnbuilder
from cnnbuilder.cli import main
from cnnbuilder.data import load_dataset
from cnnbuilder.data.images import decode_path, read_image
from cnnbuilder.errors import CnnBuilderError, DataError, UsageError

X = np.zeros((60, 8, 8, 1), np.uint8)


@pytest.mark.parametrize("labels, kwargs, needle", [
    (np.r_[np.arange(59) % 3, 99], {}, "go up to 99 but never use 3, 4"),
    (np.zeros(60, int), {}, "hold 1 class (0)"),
    (np.arange(60) % 3, {"class_names": ["a", "b"]}, "2 names but the labels go up to 2"),
    (np.arange(60) % 2, {"class_names": ["a", "b\nc"]}, "class 1 is named 'b\\nc'"),
    (np.arange(60) % 2, {"class_names": ["a", " "]}, "class 1 is named ' '"),
])
def test_array_labels_and_names_are_checked(labels, kwargs, needle):
    with pytest.raises(DataError) as caught:
        load_dataset((X, labels), **kwargs)
    assert needle in str(caught.value)


def test_a_stray_label_in_one_split_is_refused():
    with pytest.raises(DataError, match="go up to 5 but never use 3, 4"):
        load_dataset({"train": (X, np.arange(60) % 3), "test": (X, np.r_[np.arange(59) % 3, 5])})


def test_every_class_present_and_two_of_them_load():
    data = load_dataset((X, np.arange(60) % 3))
    assert data.class_names == ["0", "1", "2"]


def write_png(path, value=0, size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_a_class_folder_whose_name_cannot_be_exported_is_refused_at_load(tmp_path):
    for name in ("cat", "dog\nfish"):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", i)
    with pytest.raises(DataError, match=r"class 1 is named 'dog\\nfish'"):
        load_dataset(f"folder:{tmp_path}")


def test_an_output_inside_the_dataset_folder_is_refused(tmp_path, capsys):
    for name in ("a", "b"):
        write_png(tmp_path / "data" / name / "0.png")
    code = main(["train", "lenet5", "--dataset", f"folder:{tmp_path / 'data'}",
                 "--output", str(tmp_path / "data" / "runs" / "r1")])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "inside the dataset folder" in err
    assert not (tmp_path / "data" / "runs").exists()
    with pytest.raises(DataError, match="^output .* inside the dataset folder"):
        cnnbuilder.train("lenet5", f"folder:{tmp_path / 'data'}", output=tmp_path / "data" / "r")
    with pytest.raises(DataError, match="inside the dataset folder"):
        cnnbuilder.tune("lenet5", dataset=f"folder:{tmp_path / 'data'}", output=tmp_path / "data")


@pytest.mark.parametrize("kwargs, needle", [
    ({"seed": -1}, "^seed: expected an integer from 0 to 4,294,967,295"),
    ({"learning_rate": float("inf")}, "^learning_rate: expected a finite number > 0"),
    ({"weight_decay": float("nan")}, "^weight_decay: expected a finite number >= 0"),
    ({"input_shape": "32,32,1"}, "^input_shape: expected"),
    ({"epochs": 0}, "^epochs: expected an integer >= 1"),
])
def test_train_keywords_are_checked_before_anything_runs(tmp_path, kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        cnnbuilder.train("lenet5", "digits", output=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_tune_seed_is_checked(tmp_path):
    with pytest.raises(CnnBuilderError, match="^seed: expected an integer"):
        cnnbuilder.tune("resnet20", output=tmp_path / "search", seed=2**32)


def orientation_6_jpeg(path, upright: np.ndarray):
    """A JPEG stored on its side, as a phone writes it: the pixels turned 90 degrees
    clockwise with EXIF orientation 6 saying to turn them back."""
    stored = np.rot90(upright, k=1)  # what the camera sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, "JPEG", quality=100, exif=exif.tobytes())


def test_training_and_predict_decode_an_orientation_6_jpeg_upright_and_alike(tmp_path):
    upright = np.zeros((12, 20, 3), np.uint8)
    upright[:4] = 255  # a white band along the top edge (no chroma to subsample)
    path = tmp_path / "photo.jpg"
    orientation_6_jpeg(path, upright)
    with Image.open(path) as raw:
        assert raw.size == (12, 20)  # stored on its side
    predicted = read_image(path)  # predict's decoder
    trained = decode_path(tf.constant(str(path)), 3).numpy()  # the training pipeline's
    assert predicted.shape == trained.shape == (12, 20, 3)
    assert np.array_equal(predicted, trained)
    assert np.abs(predicted.astype(int) - upright).max() <= 8  # upright, up to JPEG rounding


def test_a_folder_of_phone_photos_trains_on_upright_images(tmp_path):
    upright = np.zeros((12, 20, 3), np.uint8)
    upright[:4] = 255
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            orientation_6_jpeg(tmp_path / name / f"{i}.jpg", upright)
    data = load_dataset(f"folder:{tmp_path}", validation_split=0, test_split=0.34)
    assert data.image_shape == (12, 20, 3) and data.skipped == ()
    for image, _ in data.train:
        assert np.array_equal(image.numpy(), read_image(tmp_path / "a" / "0.jpg"))


def test_train_refuses_a_model_over_the_bound_before_loading_data(tmp_path, capsys):
    from cnnbuilder.errors import RecipeError

    with pytest.raises(RecipeError, match=r"^input_shape=\(30000, 30000, 1\) gives, at .*lenet5"):
        cnnbuilder.train("lenet5", "digits", input_shape=(30000, 30000, 1), output=tmp_path / "r")
    code = main(["train", "lenet5", "--input-shape", "30000,30000,1", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--input-shape 30000,30000,1 gives" in err and "over the bound" in err
    assert not (tmp_path / "r").exists()


def test_export_class_names_that_cannot_be_exported_are_refused(tmp_path, capsys):
    code = main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "e" / "1"),
                 "--class-names", "a,b\tc"])
    err = capsys.readouterr().err
    assert code == 2 and "--class-names: class 1 is named 'b\\tc'" in err
    assert not (tmp_path / "e").exists()
