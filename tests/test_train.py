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
    # He et al. 2016, Section 4.2: plain momentum (no Nesterov)
    assert (config.optimizer, config.nesterov, config.momentum) == ("sgd", False, 0.9)
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
    # Jégou et al. 2017: "an exponential decay of 0.995 after each epoch".
    exponential = learning_rate_schedule(training_config(
        {"schedule": "exponential", "step_factor": 0.995, "epochs": 6, "learning_rate": 1e-3}), 4)
    assert [float(exponential(i)) for i in (0, 3, 4, 11, 12, 23)] == pytest.approx(
        [1e-3, 1e-3, 1e-3 * 0.995, 1e-3 * 0.995 ** 2, 1e-3 * 0.995 ** 3, 1e-3 * 0.995 ** 5], rel=1e-6)


# ----------------------------------------------------------------------------- the paper's training


def _one_variable_steps(optimizer, gradients, start=(1.0, -2.0)):
    """The values of one variable after `optimizer` applies each gradient in turn."""
    variable = keras.Variable(np.array(start, "float32"))
    values = []
    for gradient in gradients:
        optimizer.apply([np.array(gradient, "float32")], [variable])
        values.append(np.array(variable.numpy(), "float64"))
    return values


@pytest.mark.parametrize("nesterov", [False, True])
def test_l2_weight_decay_goes_through_momentum_as_torch_sgd(nesterov):
    from cnnbuilder.training.optimizers import TorchSGD

    lr, mu, wd = 0.1, 0.9, 0.01
    gradients = [(0.5, 0.25), (-0.3, 0.1), (0.2, -0.4)]
    got = _one_variable_steps(TorchSGD(lr, momentum=mu, nesterov=nesterov, l2_decay=wd), gradients)
    w, v = np.array([1.0, -2.0]), np.zeros(2)
    for gradient, value in zip(gradients, got):  # torch.optim.SGD, dampening 0
        g = np.array(gradient) + wd * w
        v = mu * v + g
        w = w - lr * (g + mu * v if nesterov else v)
        np.testing.assert_allclose(value, w, atol=1e-6)


def test_decoupled_weight_decay_is_outside_the_momentum():
    from cnnbuilder.recipe.training import training_config
    from cnnbuilder.training.optimizers import make_optimizer

    config = training_config({"schedule": "constant", "learning_rate": 0.1, "momentum": 0.9,
                              "nesterov": False, "weight_decay": 0.01,
                              "weight_decay_mode": "decoupled"})
    optimizer = make_optimizer(config, steps_per_epoch=10)
    assert type(optimizer) is keras.optimizers.SGD and optimizer.weight_decay == 0.01
    gradients = [(0.5, 0.25), (-0.3, 0.1)]
    got = _one_variable_steps(optimizer, gradients)
    w, m = np.array([1.0, -2.0]), np.zeros(2)
    for gradient, value in zip(gradients, got):  # Keras: w -= lr·wd·w, then the momentum step
        w = w - 0.1 * 0.01 * w
        m = 0.9 * m - 0.1 * np.array(gradient)
        w = w + m
        np.testing.assert_allclose(value, w, atol=1e-6)
    l2 = make_optimizer(training_config({"weight_decay_mode": "l2", "weight_decay": 0.01}), 10)
    assert l2.l2_decay == 0.01 and not l2.weight_decay  # Keras' own decay stays off


def test_l2_adam_adds_the_decay_to_the_gradient():
    from cnnbuilder.training.optimizers import L2Adam

    decayed = _one_variable_steps(L2Adam(0.01, l2_decay=0.5), [(0.1, 0.1)])
    plain = _one_variable_steps(keras.optimizers.Adam(0.01), [(0.1 + 0.5 * 1.0, 0.1 + 0.5 * -2.0)])
    np.testing.assert_allclose(decayed[0], plain[0], atol=1e-7)


def test_label_smoothing_changes_the_loss_as_the_formula():
    from cnnbuilder.training.losses import training_loss

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 1])
    s = 0.1
    targets = np.eye(3)[labels] * (1 - s) + s / 3
    expected = -(targets * np.log(probabilities)).sum(axis=1).mean()
    assert float(training_loss(s)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    plain = -np.log(probabilities[[0, 1], labels]).mean()
    assert float(training_loss(0.0)(labels, probabilities)) == pytest.approx(plain, rel=1e-5)
    assert float(training_loss(s)(labels[:, None], probabilities)) == pytest.approx(expected, rel=1e-5)


def test_paper_schedule_steps_and_warms_up_at_a_fixed_rate():
    from cnnbuilder.training.schedules import PaperSchedule

    schedule = PaperSchedule(0.1, 640, boundaries=[320, 480], warmup_steps=40, warmup_learning_rate=0.01)
    rates = [float(schedule(i)) for i in (0, 39, 40, 319, 320, 479, 480, 639)]
    assert rates == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    schedule.end_warmup(5)
    assert float(schedule(5)) == pytest.approx(0.1) and float(schedule(4)) == pytest.approx(0.01)
    again = PaperSchedule.from_config(schedule.get_config())
    assert float(again(5)) == pytest.approx(0.1) and again.get_config() == schedule.get_config()


def test_an_iterations_recipe_on_other_data_runs_the_papers_epochs():
    from cnnbuilder.recipe.training import training_config
    from cnnbuilder.training.callbacks import StopAtStep, schedule_callbacks
    from cnnbuilder.recipe.training_plan import layout

    config = training_config(cnnbuilder.load_recipe("resnet20").training)
    own = layout(config, 352, "tfds:cifar10")
    assert own.epochs == 182 and any(isinstance(c, StopAtStep) for c in schedule_callbacks(config, own))
    plateau = training_config(cnnbuilder.load_recipe("vgg16").training)
    [callback] = schedule_callbacks(plateau, layout(plateau, 10))
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert callback.min_lr == pytest.approx(0.01 * 0.1**3)


def _tiny_model(classes=2):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def test_warmup_ends_when_the_training_error_is_below_the_threshold():
    from cnnbuilder.training.callbacks import WarmupUntilError
    from cnnbuilder.training.optimizers import TorchSGD
    from cnnbuilder.training.schedules import PaperSchedule

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    schedule = PaperSchedule(0.1, 1000, decay="constant", warmup_steps=900, warmup_learning_rate=0.01)
    model = _tiny_model()
    model.compile(optimizer=TorchSGD(schedule, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[WarmupUntilError(0.9)])
    # any net is below 90% error: the warm-up ends once 10 batches are in the window
    assert int(schedule.warmup_end.numpy()) == 10


def test_a_model_compiled_with_the_papers_training_round_trips(tmp_path):
    from cnnbuilder.recipe.training import training_config
    from cnnbuilder.training.optimizers import compile_model

    config = training_config({"iterations": 1000, "boundaries": [500], "schedule": "step",
                              "weight_decay_mode": "l2", "label_smoothing": 0.1, "warmup": 10,
                              "warmup_learning_rate": 0.01, "nesterov": False})
    model = _tiny_model()
    compile_model(model, config, steps_per_epoch=20)
    model.fit(np.zeros((8, 4), "float32"), np.zeros(8, "int64"), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=True)
    optimizer = loaded.optimizer
    assert type(optimizer).__name__ == "TorchSGD" and optimizer.l2_decay == 1e-4
    assert int(optimizer.iterations.numpy()) == 1
    assert optimizer._learning_rate.get_config() == model.optimizer._learning_rate.get_config()
    assert loaded.loss.label_smoothing == 0.1


def test_dropout_setting_sets_the_recipes_param_or_is_refused(tiny):
    from cnnbuilder.training import prepare

    data = cnnbuilder.load_dataset("digits")
    job = prepare("densenet40_k12", data, training={"dropout": 0.2, "epochs": 1})
    assert job.settings.recipe_params["dropout"] == 0.2
    with pytest.raises(RecipeError, match="tiny has no dropout param"):
        prepare(tiny, data, training={"dropout": 0.2})
    with pytest.raises(RecipeError, match="disagree"):
        prepare("densenet40_k12", data, params={"dropout": 0.1}, training={"dropout": 0.2})


def test_show_training_json_and_text(capsys):
    from cnnbuilder.cli import main

    assert main(["show", "resnet110", "--training", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["unit"], report["length"], report["nesterov"]) == ("iterations", 64000, False)
    assert report["schedule"]["warmup"] == {"length": 400, "learning_rate": 0.01, "until_error": 0.8}
    assert report["weight_decay_mode"] == "l2" and "Section 4.2" in report["source"]
    assert main(["show", "resnet20", "--training", "epochs=20", "label_smoothing=0.1",
                 "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "step, x0.1 at [10, 15] epochs" in out and "[override]" in out
    assert "label_smoothing: 0.1 (override" in out and "for digits" in out
    assert main(["show", "resnet20", "--training", "momentun=0.5"]) == 2
    err = capsys.readouterr().err
    assert "--training: unknown training setting 'momentun'" in err and "Did you mean 'momentum'" in err
    assert main(["show", "resnet20", "--training", "optimizer=adamw"]) == 2
    assert "adamw decays the weights decoupled" in capsys.readouterr().err


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
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1"),
        (["--batch-size", "-4"], "argument --batch-size: expected an integer >= 1"),
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


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_dataset_normalization_records_the_training_splits_statistics_once(tmp_path, monkeypatch):
    """metadata.preprocessing: dataset: run.json holds the training split's channel mean and
    std; a resumed run and a fine-tuning run from the run directory reuse them (computing
    them again fails here), even on other data."""
    from cnnbuilder.data import preprocess
    from cnnbuilder.training import commit, settings

    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE.replace(
        "classes: 4}", "classes: 4, preprocessing: dataset}"))
    train = cnnbuilder.load_dataset("digits").train
    unit = preprocess(train[0], (16, 16, 3)).numpy().reshape(-1, 3).astype(np.float64)
    kwargs = dict(output=tmp_path / "run", epochs=2, batch_size=64, verbose=0, tensorboard=False)
    on_epoch_end = commit.EpochCommit.on_epoch_end

    def interrupted(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        raise _Stop()

    monkeypatch.setattr(commit.EpochCommit, "on_epoch_end", interrupted)
    with pytest.raises(_Stop):
        cnnbuilder.train(recipe, "digits", **kwargs)
    monkeypatch.setattr(commit.EpochCommit, "on_epoch_end", on_epoch_end)
    record = json.loads((tmp_path / "run" / "run.json").read_text())["preprocessing"]
    assert record["normalization"] == "dataset"
    np.testing.assert_allclose(record["mean"], unit.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(record["std"], unit.std(axis=0), rtol=1e-5)

    def recomputed(*args):
        raise AssertionError("the statistics were computed again")

    monkeypatch.setattr(settings, "channel_statistics", recomputed)
    result = cnnbuilder.train(recipe, "digits", **kwargs)  # resumes at epoch 2
    assert result.metrics["epochs_run"] == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["preprocessing"] == record and run["normalization"]["mean"] == record["mean"]
    x = np.random.default_rng(1).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    cnnbuilder.train(recipe, (x, np.arange(24) % 4), weights=str(tmp_path / "run"),
                     **{**kwargs, "output": tmp_path / "tuned", "epochs": 1})
    tuned = json.loads((tmp_path / "tuned" / "run.json").read_text())["preprocessing"]
    assert tuned == record


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


@pytest.mark.slow
def test_reproduce_trains_as_the_paper_and_prints_the_published_error(tmp_path, capsys):
    """benchmarks/reproduce.py's code path on tfds' mock CIFAR-10 (random images, one short
    epoch): the recipe's training, its departures and the published error side by side."""
    tfds = pytest.importorskip("tensorflow_datasets")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reproduce

    # The installed tfds has no metadata files for cifar10's mock: write them (split sizes).
    builder = tfds.builder("cifar10", data_dir=tmp_path / "tfds")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[count], num_bytes=0)
        for name, count in (("train", 64), ("test", 32))]))
    metadata = tmp_path / "tfds" / "cifar10" / str(builder.version)
    metadata.mkdir(parents=True)
    builder.info.write_to_directory(str(metadata))
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(tmp_path / "tfds")):
        figures = reproduce.reproduce("resnet20", data_dir=tmp_path / "tfds", epochs=1,
                                      output=tmp_path / "run", verbose=0)
    out = capsys.readouterr().out
    assert figures["dataset"] == "tfds:cifar10" and figures["epochs_run"] == 1
    assert figures["reported_error"] == 8.75 and "Table 6" in figures["reported_source"]
    assert "published 8.75%" in out and "test error" in out
    assert "epochs: 1 (override; the recipe: 64000 iterations)" in out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["training"]["nesterov"] is False and run["training"]["weight_decay_mode"] == "l2"
    assert run["training"]["epochs"] == 1 and run["dataset"] == "tfds:cifar10"


def test_stop_at_step_ends_training_inside_the_epoch_where_the_paper_stops():
    from cnnbuilder.training.callbacks import StopAtStep

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    x, y = np.zeros((40, 4), "float32"), np.zeros((40,), "int64")
    model.fit(x, y, batch_size=10, epochs=3, verbose=0,  # 4 steps an epoch
              callbacks=[StopAtStep(6, steps_per_epoch=4)])
    assert int(model.optimizer.iterations.numpy()) == 6
