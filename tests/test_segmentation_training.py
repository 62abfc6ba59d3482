"""Segmentation through the one training engine: the per-pixel loss and metrics it compiles,
the scores it writes (mean IoU in history.csv and metrics.json, the best epoch by it), the
picture beside history.png, tuning on validation mean IoU, and the task checks that stop a
classifier meeting masks (or the reverse) before anything is written."""

from __future__ import annotations

import csv
import dataclasses
import json

import keras
import numpy as np
import pytest

import cnnbuilder
from cnnbuilder import cli
from cnnbuilder.data import load_dataset
from cnnbuilder.errors import DataError, RecipeError
from cnnbuilder.training.engine import prepare

TINY_UNET = {"input_shape": (32, 32, 1), "params": {"width": 4}}


@pytest.fixture(scope="module")
def digits_seg():
    """A small slice of the embedded digits segmentation set (every split kept short)."""
    data = load_dataset("digits-seg")
    return dataclasses.replace(data, train=tuple(a[:96] for a in data.train),
                               validation=tuple(a[:48] for a in data.validation),
                               test=tuple(a[:48] for a in data.test))


def _numpy_mean_iou(true: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean IoU over the classes present in labels or predictions, by plain counting."""
    ious = []
    for c in range(classes):
        union = np.sum((true == c) | (predicted == c))
        if union:
            ious.append(np.sum((true == c) & (predicted == c)) / union)
    return float(np.mean(ious))


@pytest.mark.slow
def test_a_segmentation_run_scores_by_mean_iou_and_draws_its_masks(digits_seg, tmp_path):
    out = tmp_path / "run"
    result = cnnbuilder.train("unet", digits_seg, output=out, **TINY_UNET,
                              training={"epochs": 2, "batch_size": 16, "optimizer": "adam",
                                        "learning_rate": 0.01})
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert {"mean_iou", "pixel_accuracy", "val_mean_iou", "val_pixel_accuracy"} <= set(rows[0])
    # The best epoch is the one of the highest validation mean IoU.
    best = max(rows, key=lambda r: (float(r["val_mean_iou"]), -int(r["epoch"])))
    assert metrics["best_epoch"] == int(best["epoch"])
    assert (out / "segmentation.png").stat().st_size > 0 and (out / "history.png").exists()
    assert json.loads((out / "run.json").read_text())["task"] == "segmentation"

    # The test scores are those of the saved model, counted pixel by pixel.
    model = keras.saving.load_model(out / "model.keras")
    job = prepare("unet", digits_seg, **TINY_UNET)
    true, predicted = [], []
    for images, masks, weights in job.pipeline("test"):
        assert np.all(np.asarray(weights) == 1)  # digits-seg labels every pixel
        true.append(np.asarray(masks))
        predicted.append(np.argmax(model.predict_on_batch(images), axis=-1))
    true, predicted = np.concatenate(true), np.concatenate(predicted)
    assert metrics["test_mean_iou"] == pytest.approx(_numpy_mean_iou(true, predicted, 11), abs=1e-9)
    assert metrics["test_pixel_accuracy"] == pytest.approx(np.mean(true == predicted), abs=1e-9)
    assert set(metrics["test_iou_per_class"]) == set(digits_seg.class_names)
    assert result.metrics == metrics


@pytest.mark.slow
def test_an_interrupted_segmentation_run_resumes_to_the_uninterrupted_result(digits_seg, tmp_path,
                                                                             monkeypatch):
    """Interrupted after its first epoch's commit and rerun, a segmentation run (translated
    image and mask batches, pixel weights, mean IoU) ends where the uninterrupted one does."""
    from cnnbuilder.training import commit

    kwargs = dict(**TINY_UNET, seed=3, verbose=0, tensorboard=False,
                  training={"epochs": 2, "batch_size": 32, "optimizer": "adam",
                            "learning_rate": 0.01, "augment": ["translate", "flip"]})
    whole = cnnbuilder.train("unet", digits_seg, output=tmp_path / "whole", **kwargs)
    committed = commit.EpochCommit.on_epoch_end

    def commit_then_stop(self, epoch, logs=None):
        committed(self, epoch, logs)
        raise KeyboardInterrupt  # after epoch 1 is on disk, as Ctrl-C

    with monkeypatch.context() as patch:
        patch.setattr(commit.EpochCommit, "on_epoch_end", commit_then_stop)
        with pytest.raises(KeyboardInterrupt):
            cnnbuilder.train("unet", digits_seg, output=tmp_path / "cut", **kwargs)
    from cnnbuilder import runs

    assert runs.epochs_done(tmp_path / "cut") == 1
    trained = []

    def counting(self, epoch, logs=None):
        trained.append(epoch)
        committed(self, epoch, logs)

    monkeypatch.setattr(commit.EpochCommit, "on_epoch_end", counting)
    resumed = cnnbuilder.train("unet", digits_seg, output=tmp_path / "cut", **kwargs)
    assert trained == [1]  # the second epoch alone: the first was kept
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    expected = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert len(rows) == 2
    for mine, theirs in zip(rows, expected):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (mine["epoch"], key)
    assert resumed.metrics["test_mean_iou"] == pytest.approx(whole.metrics["test_mean_iou"], abs=1e-6)


def test_the_pipeline_of_a_segmentation_job_carries_the_class_weights(digits_seg):
    weights = [0.25] + [2.0] * 10
    job = prepare("unet", digits_seg, training={"class_weights": weights}, **TINY_UNET)
    _, masks, pixel_weights = next(iter(job.pipeline("test")))
    assert np.array_equal(np.asarray(pixel_weights), np.asarray(weights, "float32")[np.asarray(masks)])


@pytest.mark.parametrize("recipe, dataset, training, error, message", [
    ("unet", "digits", {}, DataError, r"unet is a segmentation network but the dataset digits is a "
                                      r"classification dataset"),
    ("resnet20", "digits-seg", {}, DataError, r"resnet20 is a classification network but the "
                                              r"dataset digits-seg is a segmentation dataset"),
    ("unet", "digits-seg", {"loss": "bce"}, RecipeError, r"loss = 'bce' is a classification loss"),
    ("unet", "digits-seg", {"augment": ["mixup"]}, RecipeError, r"augment mixup .*no per-pixel form"),
    ("unet", "digits-seg", {"class_weights": [1, 2]}, RecipeError,
     r"class_weights has 2 values but the dataset digits-seg has 11 classes"),
    ("resnet20", "digits", {"loss": "dice"}, RecipeError, r"loss = 'dice' is for segmentation"),
    ("unet", "digits-seg", {"epochs": 2, "warmup": 1, "warmup_until_error": 0.8}, RecipeError,
     r"warmup_until_error ends the warm-up on the training error of a classifier"),
])
def test_a_network_meets_only_data_and_losses_of_its_task(digits_seg, recipe, dataset, training,
                                                          error, message, tmp_path):
    data = digits_seg if dataset == "digits-seg" else load_dataset("digits")
    shape = (32, 32, 1) if recipe == "unet" else None
    with pytest.raises(error, match=message):
        cnnbuilder.train(recipe, data, output=tmp_path / "never", training=training,
                         input_shape=shape, params={"width": 4} if recipe == "unet" else {})
    assert not (tmp_path / "never").exists()


def test_the_cli_refuses_a_classifier_on_masks_with_exit_2(tmp_path, capsys):
    code = cli.main(["train", "resnet20", "--dataset", "digits-seg", "--output",
                     str(tmp_path / "never")])
    assert code == 2 and not (tmp_path / "never").exists()
    assert "segmentation dataset" in capsys.readouterr().err


@pytest.mark.parametrize("recipe, objective", [("unet", "val_accuracy"), ("resnet20", "val_mean_iou")])
def test_a_search_refuses_an_objective_its_trials_do_not_log(digits_seg, recipe, objective, tmp_path):
    from cnnbuilder.errors import TuningError

    data = digits_seg if recipe == "unet" else load_dataset("digits")
    with pytest.raises(TuningError, match=f"objective '{objective}' is not logged"):
        cnnbuilder.tune(recipe, dataset=data, output=tmp_path / "never", objective=objective)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_a_segmentation_search_is_scored_by_validation_mean_iou(digits_seg, tmp_path):
    recipe = {"extends": "unet", "name": "unet_search", "tune": {"width": {"choice": [2, 4]}}}
    result = cnnbuilder.tune(recipe, dataset=digits_seg, output=tmp_path / "search", max_trials=2,
                             epochs=1, input_shape=(32, 32, 1), quiet=True, tensorboard=False)
    assert result["objective"] == "val_mean_iou" and result["direction"] == "max"
    completed = [t for t in result["trials"] if t["status"] == "completed"]
    assert result["best"]["score"] == max(t["score"] for t in completed)
    assert (tmp_path / "search" / "best" / "model.keras").exists()


@pytest.mark.slow
def test_reproduce_reads_camvid_and_prints_the_mean_iou_beside_the_paper(tmp_path, capsys):
    """benchmarks/reproduce.py's segmentation path on generated data in CamVid's layout
    (train/, trainannot/, ...; label 11 void), at a small input so it runs in seconds."""
    import sys
    from pathlib import Path

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reproduce

    rng = np.random.default_rng(0)
    camvid = tmp_path / "CamVid"
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        (camvid / split).mkdir(parents=True)
        (camvid / f"{split}annot").mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(
                camvid / split / f"{split}_{i}.png")
            labels = rng.integers(0, 12, (36, 48), dtype=np.uint8)  # 11: void
            Image.fromarray(labels).save(camvid / f"{split}annot" / f"{split}_{i}.png")
    data = load_dataset(reproduce.camvid_folder(camvid, tmp_path / "linked"))
    assert data.ignore_label == 255 and data.class_names == list(reproduce.CAMVID_CLASSES)
    first = np.array(Image.open(camvid / "trainannot" / "train_0.png"))
    assert (first == 11).any()  # the void pixels are the ignored ones
    figures = reproduce.reproduce("fcdensenet56", data_dir=camvid, epochs=1, verbose=0,
                                  input_shape=(32, 32, 3), output=tmp_path / "run")
    out = capsys.readouterr().out
    assert figures["reported_mean_iou"] == 58.9 and figures["epochs_run"] == 1
    assert "published 58.9%" in out and "test mean IoU" in out and "departs:" in out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["task"] == "segmentation" and run["class_names"] == list(reproduce.CAMVID_CLASSES)
    assert run["training"]["optimizer"] == "rmsprop" and run["training"]["schedule"] == "exponential"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert figures["test_mean_iou"] == pytest.approx(100 * metrics["test_mean_iou"], abs=1e-3)


@pytest.mark.slow
def test_a_backbone_decoder_fine_tunes_from_torchvision_weights_with_its_encoder_frozen(
        digits_seg, tmp_path, monkeypatch):
    """`train unet_backbone --set backbone=resnet18 --weights torchvision --freeze backbone`:
    the weights go into the encoder (the backbone's, resolved against resnet18, not the
    decoder recipe), "backbone" freezes the encoder alone so the decoder trains, the run
    normalizes as the weights were trained and never crops a segmentation input; the run's
    own model.keras then loads back whole, decoder included."""
    from torch_reference import block_triton, save_torchvision

    block_triton()  # TensorFlow is loaded: triton's LLVM would crash beside it
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNBUILDER_OFFLINE", "1")
    network = torchvision.models.resnet18()
    save_torchvision(network, tmp_path / "torch", "resnet18-f37072fd.pth")
    out = tmp_path / "run"
    initial = cnnbuilder.build("unet_backbone", backbone="resnet18", input_shape=(32, 32, 3),
                               classes=11)
    cnnbuilder.train("unet_backbone", digits_seg, output=out, params={"backbone": "resnet18"},
                     weights="torchvision", freeze="backbone", input_shape=(32, 32, 3),
                     training={"epochs": 1, "batch_size": 32}, verbose=0)
    record = json.loads((out / "run.json").read_text())
    assert record["preprocessing"]["normalization"] == "torch"
    assert "crop_from" not in record["preprocessing"]
    model = keras.saving.load_model(out / "model.keras")
    conv1 = network.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(model.get_layer("stem_conv1").get_weights()[0], conv1, atol=1e-6)
    assert not model.get_layer("stem_conv1").trainable  # the encoder, frozen
    decoder = [layer for layer in model.layers if layer.weights and layer.trainable]
    assert decoder and all(layer.name.startswith(("decoder", "predictions")) for layer in decoder)
    changed = [layer.name for layer in decoder if not all(
        np.array_equal(a, b) for a, b in zip(layer.get_weights(), initial.get_layer(layer.name).get_weights()))]
    assert changed  # the decoder trained
    # Weights of the whole trained network load into all of it (not only its encoder).
    again = cnnbuilder.build("unet_backbone", backbone="resnet18", weights=str(out),
                             input_shape=(32, 32, 3), classes=11)
    for layer in model.layers:
        for ours, theirs in zip(again.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
