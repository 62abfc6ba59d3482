"""Training: outputs, resume after a kill, refusal to clobber, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import cnnbuilder
from cnnbuilder.errors import DataError, RecipeError, RunError
from cnnbuilder.recipe.training import training_config
from helpers import TINY_RECIPE, write

CLI = [sys.executable, "-m", "cnnbuilder.cli"]


@pytest.fixture
def tiny(tmp_path):
    return write(tmp_path, "tiny.yaml", TINY_RECIPE)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_training_config_from_recipe_and_overrides():
    config = training_config(cnnbuilder.load_recipe("resnet20").training, epochs=3)
    assert (config.optimizer, config.nesterov, config.momentum) == ("sgd", True, 0.9)
    assert config.schedule == "step" and config.epochs == 3 and config.batch_size == 128
    with pytest.raises(RecipeError, match=r"epochs = 0: expected a positive integer"):
        training_config({}, epochs=0)
    with pytest.raises(RecipeError, match=r"Did you mean 'momentum'"):
        training_config({"momentun": 0.9})


def test_learning_rate_schedules():
    from cnnbuilder.training import learning_rate_schedule

    step = learning_rate_schedule(training_config({"schedule": "step", "epochs": 4}), 10)
    assert [float(step(i)) for i in (0, 19, 21, 31)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cosine = learning_rate_schedule(training_config({"schedule": "cosine", "epochs": 4}), 10)
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(40)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_train_writes_the_run_directory(tiny, tmp_path):
    out = tmp_path / "run"
    result = cnnbuilder.train(tiny, "digits", output=out, epochs=2, batch_size=64, verbose=0)
    for name in ("metrics.json", "history.csv", "history.png", "model.keras", "run.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"test_accuracy", "test_loss", "epochs_run", "params", "seconds",
                            "dataset", "class_names"}
    assert metrics["epochs_run"] == 2 and metrics["dataset"] == "digits"
    assert metrics["class_names"] == [str(i) for i in range(10)]
    assert metrics["params"] == result.model.count_params()
    rows = read_rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    run = json.loads((out / "run.json").read_text())
    assert run["input_shape"] == [16, 16, 3] and run["classes"] == 10
    loaded = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert loaded.output_shape == (None, 10)
    assert not (out / "resume").exists()
    # the saved model is the best epoch's and scores the reported test accuracy
    data = cnnbuilder.load_dataset("digits")
    from cnnbuilder.data import make_pipeline

    test = make_pipeline(data.test, input_shape=(16, 16, 3), batch_size=128, training=False)
    loaded.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert loaded.evaluate(test, verbose=0)[1] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_finished_run_is_not_overwritten_unless_asked(tiny, tmp_path):
    out = tmp_path / "run"
    cnnbuilder.train(tiny, "digits", output=out, epochs=1, verbose=0)
    before = (out / "metrics.json").read_text()
    with pytest.raises(RunError, match="already holds a finished run"):
        cnnbuilder.train(tiny, "digits", output=out, epochs=1, verbose=0)
    assert (out / "metrics.json").read_text() == before
    cnnbuilder.train(tiny, "digits", output=out, epochs=2, verbose=0, overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.slow
def test_numpy_arrays_and_a_keras_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (120, 12, 12, 1), dtype=np.uint8)
    y = (x.mean(axis=(1, 2, 3)) > 127).astype("int64")
    inputs = keras.Input((12, 12, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    result = cnnbuilder.train(model, (x, y), epochs=2, batch_size=16, verbose=0,
                              learning_rate=0.01, augment=[])
    assert result.metrics["epochs_run"] == 2 and result.output is None


@pytest.mark.slow
def test_folder_dataset_trains(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for label, value in (("dark", 40), ("light", 210)):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(value, 20, (20, 18, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    result = cnnbuilder.train(tiny, f"folder:{tmp_path / 'images'}", output=tmp_path / "run",
                              epochs=1, batch_size=8, verbose=0)
    assert result.metrics["class_names"] == ["dark", "light"]


def run_cli(*args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist"], "Unknown dataset spec 'mnist'"),
        (["--dataset", "folder:/no/such/folder"], "/no/such/folder"),
        (["--epochs", "0"], "expected a positive integer"),
        (["--batch-size", "-4"], "expected a positive integer"),
        (["--input-shape", "4,4,3", "--set", "width=8"], "too small"),
        (["--set", "widht=3"], "Did you mean 'width'"),
    ],
)
def test_bad_input_is_one_paragraph_and_writes_nothing(tiny, tmp_path, args, message):
    out = tmp_path / "never"
    if "too small" == message:
        tiny.write_text(TINY_RECIPE.replace("- global_pool: avg", "- pool: {size: 4}\n  - global_pool: avg"))
    result = run_cli("train", tiny, "--output", out, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_empty_folder_dataset_is_refused(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        cnnbuilder.train(tiny, f"folder:{tmp_path / 'empty'}", output=tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_killed_training_resumes_without_losing_or_repeating_epochs(tiny, tmp_path):
    """A real `cnnbuilder train` process is killed after two epochs, then rerun."""
    out = tmp_path / "run"
    args = ["train", tiny, "--output", out, "--epochs", "6", "--batch-size", "32", "--quiet"]
    process = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state = out / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 2:
            break
        if process.poll() is not None:
            pytest.fail("training ended before it could be interrupted")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["epochs_done"]
    assert 2 <= done < 6, "the kill came too late to test resuming"
    assert not (out / "metrics.json").exists()

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    rows = read_rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 6
    # the rerun continued: the learning rate went on decaying rather than restarting
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates == sorted(rates, reverse=True) and rates[done] < rates[0]


@pytest.mark.slow
def test_resume_refuses_other_settings(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"recipe": "other"}))
    (out / "state.json").write_text(json.dumps({"epochs_done": 1}))
    with pytest.raises(RunError, match="unfinished run with other settings"):
        cnnbuilder.train(tiny, "digits", output=out, epochs=2, verbose=0)



def test_a_users_model_with_the_onednn_crash_pattern_is_warned_about_not_rewritten(monkeypatch):
    """docs/known_issues.md: `train` never rewrites a user's model, but on an AVX-512 CPU
    without a workaround it warns before fitting one with a strided 1x1 convolution on
    fewer than 16 channels. (Fitting such a model would crash this very process on an
    AVX-512 machine, so the fit and evaluation are replaced by stand-ins here.)"""
    import warnings

    from cnnbuilder.model import onednn
    from cnnbuilder.training.engine import Job

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 1, strides=2, name="narrow_projection")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    monkeypatch.setattr(onednn, "cpu_has_avx512", lambda *a, **k: True)
    for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    fitted = []
    monkeypatch.setattr(Job, "fit", lambda self, m, **kwargs: fitted.append(m))
    monkeypatch.setattr(Job, "evaluate", lambda self, m: {"test_accuracy": 0.5, "test_loss": 1.0})
    data = (np.zeros((20, 8, 8, 4), np.uint8), np.arange(20) % 2)
    with pytest.warns(RuntimeWarning, match="narrow_projection"):
        cnnbuilder.train(model, data, epochs=1, batch_size=10, verbose=0, augment=[])
    assert fitted == [model]  # the user's own model, not a rewritten copy
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == ["narrow_projection"]
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cnnbuilder.train(model, data, epochs=1, batch_size=10, verbose=0, augment=[])
