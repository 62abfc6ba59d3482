"""Runs you can trust: a resumed run equals the uninterrupted one, the finished model carries
the run's compile, the run directory's files (`cnnbuilder.runs`) and what a person sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnnbuilder
from cnnbuilder import runs
from cnnbuilder.errors import RunError
from helpers import TINY_RECIPE, write

ARGS = dict(epochs=5, batch_size=64, seed=3, learning_rate=0.05)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny test network with a dropout before its classifier: Keras' own random
    draws must replay on a resume too."""
    text = TINY_RECIPE.replace("  - global_pool: avg\n", "  - global_pool: avg\n  - dropout: 0.3\n")
    assert "dropout" in text
    return write(tmp_path_factory.mktemp("recipe"), "tiny.yaml", text)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    """The reference: the run trained in one go."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return cnnbuilder.train(tiny, "digits", output=out, verbose=0, tensorboard=False, **ARGS)


def _cli_train(tiny, out: Path) -> subprocess.Popen:
    """`cnnbuilder train` of the same run in a child process."""
    command = [sys.executable, "-m", "cnnbuilder.cli", "train", str(tiny), "--dataset", "digits",
               "--output", str(out), "--epochs", str(ARGS["epochs"]), "--batch-size",
               str(ARGS["batch_size"]), "--seed", str(ARGS["seed"]), "--learning-rate",
               str(ARGS["learning_rate"]), "--quiet", "--no-tensorboard"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _interrupt_after(process: subprocess.Popen, out: Path, epochs: int, sig) -> tuple[str, str]:
    """Send `sig` to `process` once `out` has committed `epochs` epochs."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if runs.epochs_done(out) >= epochs:
            process.send_signal(sig)
            break
        time.sleep(0.05)
    return process.communicate(timeout=300)


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "kill-9"])
def test_a_resumed_run_equals_the_uninterrupted_one(tiny, uninterrupted, tmp_path, capfd, sig):
    out = tmp_path / "run"
    _, stderr = _interrupt_after(_cli_train(tiny, out), out, 2, sig)
    done = runs.epochs_done(out)
    assert 2 <= done < ARGS["epochs"] and not (out / runs.METRICS).exists()
    if sig == signal.SIGINT:
        assert "rerun the same command" in stderr  # says how to continue
    capfd.readouterr()
    resumed = cnnbuilder.train(tiny, "digits", output=out, verbose=2, tensorboard=False, **ARGS)
    assert f"resuming at epoch {done + 1} of {ARGS['epochs']} from {out}" in capfd.readouterr().out

    expected = _comparable(uninterrupted.history)
    got = _comparable(resumed.history)
    assert [row["epoch"] for row in got] == [1, 2, 3, 4, 5]
    for mine, theirs in zip(got, expected):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (mine["epoch"], key)
    for mine, theirs in zip(resumed.model.weights, uninterrupted.model.weights):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-4, atol=1e-5)
    assert resumed.metrics["test_accuracy"] == pytest.approx(
        uninterrupted.metrics["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_the_finished_model_loads_with_the_runs_optimizer_without_cnnbuilder(uninterrupted):
    """model.keras carries the run's optimizer (Keras' SGD at the recipe's momentum and
    Nesterov, at the run's rate), loss and accuracy; it loads with safe_mode, with no
    warning, in a process that never imports cnnbuilder, and trains on."""
    code = (
        "import warnings, sys, json\n"
        "warnings.simplefilter('error')\n"
        "import keras, numpy as np\n"
        f"m = keras.saving.load_model({str(uninterrupted.output / runs.MODEL)!r}, safe_mode=True)\n"
        "assert not [k for k in sys.modules if k.startswith('cnnbuilder')]\n"
        "x = np.random.rand(8, *m.inputs[0].shape[1:]).astype('float32')\n"
        "m.fit(x, np.arange(8) % 4, epochs=1, verbose=0)\n"
        "o = m.optimizer\n"
        "c = m.get_compile_config()\n"
        "print(json.dumps([type(o).__name__, float(o.learning_rate), o.momentum, o.nesterov,\n"
        "                  int(o.iterations.numpy()), str(c['loss']) + str(c['metrics'])]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name, rate, momentum, nesterov, steps, compiled = json.loads(done.stdout.strip().splitlines()[-1])
    # tiny has no training: section: cnnbuilder's defaults, SGD with Nesterov momentum 0.9.
    assert (name, momentum, nesterov) == ("SGD", 0.9, True)
    assert rate == pytest.approx(ARGS["learning_rate"])
    assert steps == 1  # it took the step
    assert "SparseCategoricalCrossentropy" in compiled and "accuracy" in compiled
    # The in-memory result is compiled the same way (no RMSprop left by the evaluation).
    assert type(uninterrupted.model.optimizer).__name__ == "SGD"


def test_a_recipe_is_loaded_and_planned_once_per_train(tmp_path, monkeypatch):
    """One load (which validates the recipe with its defaults) and one plan for the run."""
    from cnnbuilder.recipe.recipe import Recipe
    import cnnbuilder.zoo

    recipe = write(tmp_path, "fresh.yaml", TINY_RECIPE)  # a new file: no cached load
    counts = {"load": 0, "plan": 0, "loading": 0}
    plan, load, init = Recipe.plan, cnnbuilder.zoo.load_recipe, Recipe.__init__

    def counting_init(self, *args, **kwargs):
        counts["loading"] += 1
        try:
            return init(self, *args, **kwargs)
        finally:
            counts["loading"] -= 1

    def counting_plan(self, **kwargs):
        counts["plan"] += not counts["loading"]  # the load's own validation is no run plan
        return plan(self, **kwargs)

    def counting_load(source):
        counts["load"] += not isinstance(source, Recipe)  # a Recipe passed on is no load
        return load(source)

    monkeypatch.setattr(Recipe, "__init__", counting_init)
    monkeypatch.setattr(Recipe, "plan", counting_plan)
    for name, module in list(sys.modules.items()):
        if name.startswith("cnnbuilder") and getattr(module, "load_recipe", None) is load:
            monkeypatch.setattr(module, "load_recipe", counting_load)
    cnnbuilder.train(recipe, "digits", epochs=1, batch_size=256, verbose=0)
    assert counts == {"load": 1, "plan": 1, "loading": 0}


def test_history_values_are_numbers(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5, "accuracy": 0.25}, {"epoch": 2, "loss": 0.25}]
    runs.atomic_write_text(tmp_path / runs.HISTORY_CSV, runs.history_csv(rows))
    assert runs.read_history(tmp_path / runs.HISTORY_CSV) == [
        {"epoch": 1, "loss": 0.5, "accuracy": 0.25}, {"epoch": 2, "loss": 0.25, "accuracy": None}]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_written_with_the_umasks_permissions(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        runs.atomic_write_json(tmp_path / "run.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("checkpoint", ["../../elsewhere/epoch-1.keras", "/tmp/epoch-1.keras",
                                        "sub/../../epoch-1.keras"])
def test_a_checkpoint_outside_the_run_directory_is_never_followed(tmp_path, checkpoint):
    out = tmp_path / "run"
    (out / runs.RESUME_DIR).mkdir(parents=True)
    runs.atomic_write_json(out / runs.RUN, {"recipe": "tiny"})
    runs.atomic_write_text(out / runs.HISTORY_CSV, runs.history_csv([{"epoch": 1, "loss": 1.0}]))
    target = out / runs.RESUME_DIR / checkpoint
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"another run's model")
    runs.atomic_write_json(out / runs.STATE, {**runs.fresh_state(), "epochs_done": 1,
                                              "checkpoint": checkpoint})
    with pytest.raises(RunError, match="never followed"):
        runs.check_resumable(out)
    with pytest.raises(RunError, match="not a file of"):
        runs.checkpoint_path(out, {"checkpoint": checkpoint})


def test_a_network_keras_refuses_writes_nothing_and_a_failed_start_is_replaced(tiny, tmp_path,
                                                                                monkeypatch):
    from cnnbuilder.training import engine

    out = tmp_path / "run"
    real = engine.build_planned

    def refused(*args, **kwargs):
        raise ValueError("a layer name Keras refuses")

    monkeypatch.setattr(engine, "build_planned", refused)
    with pytest.raises(ValueError, match="Keras refuses"):
        cnnbuilder.train(tiny, "digits", output=out, epochs=1, verbose=0)
    assert not out.exists()  # nothing written: no run.json, no resume/

    monkeypatch.setattr(engine, "build_planned", real)
    monkeypatch.setattr(engine.Job, "fit", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        cnnbuilder.train(tiny, "digits", output=out, epochs=1, verbose=0)
    assert (out / runs.RUN).is_file() and runs.epochs_done(out) == 0
    # No epoch finished: a corrected rerun with other settings replaces it, unasked.
    monkeypatch.undo()
    result = cnnbuilder.train(tiny, "digits", output=out, epochs=1, batch_size=256,
                              learning_rate=0.01, verbose=0, tensorboard=False)
    assert result.metrics["epochs_run"] == 1
    assert json.loads((out / runs.RUN).read_text())["training"]["learning_rate"] == 0.01


def test_a_keras_model_gets_its_float_arrays_unchanged():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, (60, 4, 4, 1)).astype("float32")  # standardized features
    y = np.arange(60) % 2
    data = cnnbuilder.load_dataset((x, y), raw_floats=True)
    rows = {tuple(row.ravel()) for row in x}
    assert all(tuple(row.ravel()) in rows for row in data.train[0])  # the values as given
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(inputs)))
    from cnnbuilder.training import prepare

    job = prepare(model, data, training={"augment": [], "batch_size": 16})
    images, _ = next(iter(job.pipeline("test")))
    np.testing.assert_array_equal(images.numpy(), data.test[0][:16])
    result = cnnbuilder.train(model, (x, y), epochs=1, batch_size=16, augment=[], verbose=0)
    assert result.metrics["epochs_run"] == 1
    with pytest.raises(cnnbuilder.DataError, match="NaN or infinite"):
        cnnbuilder.train(model, (np.full_like(x, np.nan), y), epochs=1, verbose=0)


@pytest.mark.slow
def test_an_unfinished_run_is_exported_only_when_asked_and_its_card_says_so(uninterrupted,
                                                                            tmp_path):
    import shutil

    from cnnbuilder.serving.exporting import export

    run = tmp_path / "run"
    shutil.copytree(uninterrupted.output, run)
    (run / runs.METRICS).unlink()  # as a run stopped after 3 of its 5 epochs leaves it
    runs.atomic_write_json(run / runs.STATE, {**runs.fresh_state(), "epochs_done": 3})
    with pytest.raises(RunError, match="unfinished run .3 epoch.s. finished.*--allow-unfinished"):
        export(run, tmp_path / "models" / "tiny" / "1")
    assert not (tmp_path / "models").exists()
    version = export(run, tmp_path / "models" / "tiny" / "1", allow_unfinished=True)
    assert json.loads((version / "metadata.json").read_text())["unfinished"] == {"epochs_done": 3}
    assert "**Unfinished run**" in (version / "README.md").read_text()
