"""Tuning with KerasTuner: outputs, skipped and failed trials, flat memory, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import keras_tuner as kt
import pytest

import cnnbuilder
from cnnbuilder.errors import CnnBuilderError, RecipeError, RunError, TrialSkipped, TuningError
from cnnbuilder.tuning import HyperRecipe, tf_graphs

CLI = [sys.executable, "-m", "cnnbuilder.cli"]

# The smallest network worth tuning: a trial costs about two seconds on a busy 2-core
# machine, most of it tf.function tracing.
MINI = textwrap.dedent("""\
    name: mini
    description: one convolution and a classifier, for tuning tests
    metadata: {input_shape: [8, 8, 1], classes: 10}
    params:
      width: 4
      kernel: 3
      variant: 1
      checked: "${variant if variant != 8 else error('variant 8 is refused by this recipe')}"
    stem:
      - conv: {filters: "${width}", kernel: "${kernel}"}
      - activation: relu
    head:
      - global_pool: avg
      - fc: {units: "${classes}", activation: "${classifier_activation}"}
    tune:
      width: {int: [2, 64]}
    """)


@pytest.fixture
def mini(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(MINI)
    return path


@pytest.fixture(scope="module")
def small_digits():
    """Digits with 128 training images: enough for a trial to learn something."""
    data = cnnbuilder.load_dataset("digits")
    (x, y), (vx, vy) = data.train, data.validation
    return dataclasses.replace(data, train=(x[:128], y[:128]), validation=(vx[:64], vy[:64]))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def starts(directory: Path) -> list[tuple[int, str]]:
    """(trial number, tuner_id) of every trial start the oracle logged."""
    text = (directory / "search.log").read_text()
    return [(int(n), tuner) for n, tuner in re.findall(r"trial (\d+) start on (\S+)", text)]


def trial_records(directory: Path) -> dict[int, dict]:
    """cnnbuilder's record of each trial in a search directory, by trial number."""
    records = [read(p) for p in (directory / "search").glob("trial_*/cnnbuilder_trial.json")]
    return {r["number"]: r for r in records}


# ----------------------------------------------------------------------------- fast


@pytest.mark.parametrize("kwargs, error, message", [
    ({"tuner": "grid"}, TuningError, r"unknown tuner 'grid'; expected one of random, bayesian, hyperband"),
    ({"max_trials": 0}, TuningError, r"max_trials must be a positive integer, got 0"),
    ({"epochs": 0}, TuningError, r"epochs must be a positive integer"),
    ({"objective": "val_acc"}, TuningError, r"unknown objective 'val_acc'.*Did you mean 'val_accuracy'"),
    ({"max_params": -5}, TuningError, r"max_params must be a positive integer"),
    ({"widht": 8}, RecipeError, r"mini has no param 'widht'.*Did you mean 'width'"),
    ({"trial_timeout": 0}, TuningError, r"trial_timeout must be a positive number"),
])
def test_bad_arguments_are_refused_before_anything_is_written(mini, tmp_path, kwargs, error, message):
    out = tmp_path / "never"
    with pytest.raises(error, match=message):
        cnnbuilder.tune(mini, dataset="digits", output=out, **kwargs)
    assert issubclass(error, CnnBuilderError)  # the CLI prints it as one paragraph, exit 2
    assert not out.exists()


def test_recipes_without_a_space_or_with_a_bad_one_are_refused(mini, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(TuningError, match=r"lenet5 has no tune: section.*growth_rate: \{choice"):
        cnnbuilder.tune("lenet5", output=out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI.replace("width: {int: [2, 64]}", "width: {int: [2, 64], step: 0}"))
    with pytest.raises(RecipeError, match=r"bad.yaml, line 16, field tune.width.step: expected a positive integer"):
        cnnbuilder.tune(bad, output=out)
    refused = tmp_path / "refused.yaml"
    refused.write_text(MINI.replace("width: {int: [2, 64]}", "variant: {choice: [8]}"))
    with pytest.raises(RecipeError, match=r"none of its 1 combinations gives a valid network.*"
                                          r"variant 8 is refused by this recipe"):
        cnnbuilder.tune(refused, output=out)
    with pytest.raises(TuningError, match=r"every value of the tune: section of mini is fixed"):
        cnnbuilder.tune(mini, output=out, width=8)
    assert not out.exists()


def test_cli_bad_input_is_one_paragraph_and_exits_2(mini, tmp_path):
    out = tmp_path / "never"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([*CLI, "tune", str(mini), "--output", str(out), "--objective", "val_acc"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "cnnbuilder tune: error: unknown objective 'val_acc'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_finished_or_different_searches_are_not_clobbered(mini, tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    (out / "tuning.json").write_text("{}")
    with pytest.raises(RunError, match=r"already holds a finished search \(tuning.json\).*--overwrite"):
        cnnbuilder.tune(mini, output=out)
    (out / "tuning.json").unlink()
    (out / "search").mkdir()
    (out / "search" / "settings.json").write_text(json.dumps({"recipe": "mini", "epochs": 99}))
    with pytest.raises(RunError, match=r"unfinished search with other settings \(.*epochs.*\)"):
        cnnbuilder.tune(mini, output=out)


def test_hyper_recipe_declares_builds_and_skips():
    hyper = HyperRecipe("densenet_bc100_k12", input_shape=(32, 32, 3), classes=10,
                        space={"growth_rate": {"choice": [4, 8]}, "depth": {"int": [10, 22]},
                               "training": {"learning_rate": {"float": [0.01, 0.1], "log": True}}},
                        max_params=30_000)
    assert isinstance(hyper, kt.HyperModel)
    hp = kt.HyperParameters()
    hyper.declare_hyperparameters(hp)
    assert [p.name for p in hp.space] == ["growth_rate", "depth", "training.learning_rate"]
    hp.values.update({"growth_rate": 8, "depth": 16, "training.learning_rate": 0.05})
    model = hyper.build(hp)
    assert model.count_params() == cnnbuilder.build("densenet_bc100_k12", growth_rate=8, depth=16,
                                                    input_shape=(32, 32, 3), classes=10).count_params()
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    assert hyper.hyperparameters(hp) == {"growth_rate": 8, "depth": 16, "training": {"learning_rate": 0.05}}
    hp.values["depth"] = 17  # not 6n + 4: the recipe's own message, nothing built
    with pytest.raises(TrialSkipped, match=r"depth - 4 must be a positive multiple of 6"):
        hyper.build(hp)
    hp.values.update({"depth": 22})
    with pytest.raises(TrialSkipped, match=r"parameters, over the budget of 30,000") as info:
        hyper.build(hp)
    assert info.value.params > 30_000
    assert isinstance(info.value, CnnBuilderError) and "over the budget" in info.value.reason


def test_plot_shows_each_tuned_value_and_the_parameter_count(tmp_path):
    from cnnbuilder.plots.tuning import panel_points, plot_tuning, tuned_keys

    trials = [
        {"trial_id": str(i), "hyperparameters": {"growth_rate": k, "depth": d, "blocks": [1, d],
                                                  "training": {"learning_rate": lr}},
         "status": status, "score": score, "params": params, "seconds": 1.0}
        for i, (k, d, lr, status, score, params) in enumerate([
            (4, 10, 0.01, "completed", 0.5, 3000), (8, 16, 0.1, "completed", 0.7, 21000),
            (8, 22, 0.05, "skipped", None, 90000), (4, 16, 0.02, "failed", None, None)])]
    result = {"recipe": "r", "tuner": "random", "objective": "val_accuracy", "trials": trials,
              "best": trials[1], "space": {"growth_rate": {"choice": [4, 8]}, "depth": {"int": [10, 22]},
                                           "training": {"learning_rate": {"float": [0.01, 0.1], "log": True}}}}
    assert tuned_keys(result) == ["growth_rate", "depth", "training.learning_rate", "blocks"]
    # Trials without a score are drawn on their own strip, never at a score.
    for key in ("growth_rate", "depth", "blocks", "params"):
        points = panel_points(trials, key)
        assert [trial_id for _, _, trial_id in points["scored"]] == ["0", "1"]
        assert [y for _, y, _ in points["scored"]] == [0.5, 0.7]
    assert panel_points(trials, "depth")["skipped"] == [22]
    assert panel_points(trials, "depth")["failed"] == [16]
    assert panel_points(trials, "params")["failed"] == []  # a failed trial without a count
    assert panel_points(trials, "blocks")["ticks"] == ["[1, 10]", "[1, 16]", "[1, 22]"]
    path = plot_tuning(result, tmp_path / "tuning.png")
    assert path.stat().st_size > 10_000
    from PIL import Image

    assert Image.open(path).size[0] >= 3 * 400  # three panels across


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_densenet_bc_growth_rate_and_depth_on_digits(tmp_path):
    """The issue's search: all trials complete, best/model.keras is the best recipe's network.
    (16×16 inputs keep it quick; a DenseNet's parameter count does not depend on them.)"""
    recipe = {"name": "densenet_bc_small", "extends": "densenet_bc100_k12",
              "tune": {"growth_rate": {"choice": [4, 8]}, "depth": {"int": [10, 16], "step": 6}}}
    out = tmp_path / "search"
    shape = (16, 16, 3)
    result = cnnbuilder.tune(recipe, dataset="digits", output=out, max_trials=4, epochs=1,
                             batch_size=64, input_shape=shape, quiet=True)
    assert read(out / "tuning.json") == json.loads(json.dumps(result))
    trials = result["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 4
    assert sorted((t["hyperparameters"]["growth_rate"], t["hyperparameters"]["depth"]) for t in trials) == [
        (4, 10), (4, 16), (8, 10), (8, 16)]
    for trial in trials:
        assert set(trial) >= {"trial_id", "hyperparameters", "status", "score", "params", "seconds"}
        assert 0.0 <= trial["score"] <= 1.0 and trial["seconds"] > 0
        assert trial["params"] == cnnbuilder.build(recipe, input_shape=shape, classes=10,
                                                   **trial["hyperparameters"]).count_params()
    best = result["best"]
    assert best == max(trials, key=lambda t: t["score"])
    assert (result["objective"], result["tuner"], result["recipe"]) == ("val_accuracy", "random", "densenet_bc_small")
    model = keras.saving.load_model(out / "best" / "model.keras", safe_mode=True)
    expected = cnnbuilder.build(recipe, **best["hyperparameters"], input_shape=(32, 32, 3), classes=10)
    assert model.input_shape == (None, *shape)
    assert model.count_params() == expected.count_params() == best["params"]
    assert model.output_shape == (None, 10)
    run, metrics = read(out / "best" / "run.json"), read(out / "best" / "metrics.json")
    assert run["params"]["growth_rate"] == best["hyperparameters"]["growth_rate"]
    assert run["class_names"] == [str(i) for i in range(10)] and 0 <= metrics["test_accuracy"] <= 1
    # best/ is a run directory of the engine: run.json holds what a training run records
    job = cnnbuilder.training.prepare(recipe, cnnbuilder.load_dataset("digits"),
                                      params=best["hyperparameters"], input_shape=shape,
                                      training={"batch_size": 64, "epochs": 1})
    expected_run = json.loads(json.dumps({**job.settings.identity(), **job.settings.record()}))
    assert {k: run[k] for k in expected_run} == expected_run
    assert run["tuning"]["number"] == best["number"] and metrics["epochs_run"] == 1
    exported = cnnbuilder.export(out / "best", tmp_path / "exported" / "1")
    assert (exported / "saved_model.pb").exists()
    assert (out / "tuning.png").stat().st_size > 10_000
    assert sorted(n for n, _ in starts(out)) == sorted(t["number"] for t in trials)  # once each
    assert sorted(t["number"] for t in trials) == [1, 2, 3, 4]
    assert all(t["number"] == int(t["trial_id"]) + 1 for t in trials)
    with pytest.raises(RunError, match="already holds a finished search"):
        cnnbuilder.tune(recipe, dataset="digits", output=out, max_trials=4, epochs=1, batch_size=64,
                        input_shape=shape)


@pytest.mark.slow
def test_many_trials_keep_memory_flat_and_survive_skips_and_failures(tmp_path, small_digits, monkeypatch):
    """12 tiny trained trials in one process: invalid combinations and over-budget models are
    skipped untrained, an out-of-memory trial fails, the search goes on, and memory stays
    flat because each trial's graphs are released."""
    import tensorflow as tf

    recipe = tmp_path / "mini.yaml"
    recipe.write_text(MINI.replace("width: {int: [2, 64]}",
                                   "width: {int: [2, 64]}\n  variant: {choice: [1, 2, 3, 4, 5, 6, 7, 8]}"))
    fit = HyperRecipe.fit

    def out_of_memory_for_variants_6_7(self, hp, model, *args, **kwargs):
        if hp.values["variant"] in (6, 7):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape [64,64,8,8]")
        return fit(self, hp, model, *args, **kwargs)

    cleared = []
    clear = keras.backend.clear_session
    monkeypatch.setattr(HyperRecipe, "fit", out_of_memory_for_variants_6_7)
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: (cleared.append(1), clear(*a, **k)))
    assert tf_graphs.gradient_registry() is not None
    custom_before = tf_graphs.custom_gradient_count()

    out = tmp_path / "search"
    result = cnnbuilder.tune(recipe, dataset=small_digits, output=out, max_trials=12, epochs=1,
                             batch_size=64, max_params=1000, seed=3, quiet=True)
    trials = result["trials"]
    # max_trials counts the trials that train (completed or failed); skipped ones come on top
    assert len([t for t in trials if t["status"] != "skipped"]) == 12 < len(trials)
    by_status = {s: [t for t in trials if t["status"] == s] for s in ("completed", "skipped", "failed")}
    invalid = [t for t in by_status["skipped"] if t["hyperparameters"]["variant"] == 8]
    over = [t for t in by_status["skipped"] if t["hyperparameters"]["variant"] != 8]
    assert invalid and all("variant 8 is refused by this recipe" in t["reason"] for t in invalid)
    assert all(t["params"] is None for t in invalid)
    assert over and all(t["params"] > 1000 and "over the budget of 1,000" in t["reason"] for t in over)
    assert by_status["failed"] and all(t["reason"].startswith("ResourceExhaustedError: OOM")
                                       for t in by_status["failed"])
    assert all(t["hyperparameters"]["variant"] in (6, 7) for t in by_status["failed"])
    for skipped in invalid + over + by_status["failed"]:
        assert skipped["score"] is None
    for trial in invalid + over:  # never trained: no checkpoint of a best epoch
        assert not (out / "search" / f"trial_{trial['trial_id']}" / "checkpoint.weights.h5").exists()
    first_failure = min(int(t["trial_id"]) for t in by_status["failed"] + by_status["skipped"])
    assert any(int(t["trial_id"]) > first_failure for t in by_status["completed"]), "the search went on"
    completed = by_status["completed"]
    assert len(completed) >= 6
    assert result["best"]["params"] <= 1000

    # memory: sessions cleared every trial, TensorFlow's gradient registry not growing
    assert len(cleared) >= len(completed)
    custom_after = tf_graphs.custom_gradient_count()
    assert custom_after - custom_before <= 4, "each trial's traced graphs would stay alive"
    memory = [t["memory_mb"] for t in trials if t["status"] == "completed"]
    growth = memory[-1] - memory[2]
    print(f"resident memory after completed trials: {memory} MiB; growth {growth:.1f} MiB "
          f"over {len(memory) - 3} trials")
    # Unreleased, each trial keeps ~3.5 MiB of graphs alive; released, the growth is noise.
    assert growth < 1.5 * (len(memory) - 3) + 8


@pytest.mark.slow
def test_hyperband_and_bayesian_searches(mini, tmp_path, small_digits):
    out = tmp_path / "hyperband"
    result = cnnbuilder.tune(mini, dataset=small_digits, output=out, tuner="hyperband", max_trials=4,
                             epochs=3, batch_size=64, quiet=True)
    trials = result["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 4
    # the most aggressive bracket: three 1-epoch trials, the best one continued to 3 epochs
    assert [t["epochs"] for t in trials] == [1, 1, 1, 3]
    best_first = max(trials[:3], key=lambda t: t["score"])
    assert trials[3]["hyperparameters"] == best_first["hyperparameters"]
    assert "tuner/epochs" not in json.dumps(trials)

    out = tmp_path / "bayesian"
    result = cnnbuilder.tune(mini, dataset=small_digits, output=out, tuner="bayesian", max_trials=3,
                             epochs=1, batch_size=64, objective="val_loss", quiet=True)
    assert [t["status"] for t in result["trials"]] == ["completed"] * 3
    assert result["best"] == min(result["trials"], key=lambda t: t["score"])  # val_loss: lower is better
    widths = [t["hyperparameters"]["width"] for t in result["trials"]]
    assert len(set(widths)) == 3


@pytest.mark.slow
def test_killed_search_resumes_without_redoing_finished_trials(mini, tmp_path):
    """A real `cnnbuilder tune` process is killed after two trials, then rerun: the rerun
    finishes the search and retrains the best configuration, no finished trial is redone."""
    out = tmp_path / "search"
    args = [*CLI, "tune", str(mini), "--dataset", "digits", "--output", str(out), "--max-trials", "5",
            "--epochs", "1", "--batch-size", "64", "--retrain-epochs", "1", "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = out / "search.log"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(re.findall(r" end COMPLETED", log.read_text())) >= 2:
            break
        if process.poll() is not None:
            pytest.fail("the search ended before it could be interrupted")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = [int(n) for n in re.findall(r"trial (\d+) end COMPLETED", log.read_text())]
    assert 2 <= len(finished) < 5, "the kill came too late to test resuming"
    assert not (out / "tuning.json").exists()
    before = trial_records(out)

    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "5 trials (5 completed)" in result.stdout and "retrained for 1 epochs" in result.stdout
    tuning_json = read(out / "tuning.json")
    assert [t["status"] for t in tuning_json["trials"]] == ["completed"] * 5
    started = [n for n, _ in starts(out)]
    for number in finished:  # finished before the kill: never run again
        assert started.count(number) == 1
        record = next(t for t in tuning_json["trials"] if t["number"] == number)
        assert record["seconds"] == before[number]["seconds"]
    assert sorted(set(started)) == sorted(t["number"] for t in tuning_json["trials"])
    retrained = read(out / "best_retrained" / "metrics.json")
    assert retrained["epochs_run"] == 1
    assert tuning_json["retrained"]["params"] == tuning_json["best"]["params"] == retrained["params"]


@pytest.mark.slow
def test_messages_and_tuning_json_number_trials_as_keras_tuner_displays_them(tmp_path, small_digits,
                                                                            capsys):
    """"Running Trial #N" (KerasTuner's display), "Trial N skipped" (cnnbuilder's message),
    search.log and tuning.json all call a trial by the same 1-based number."""
    recipe = tmp_path / "mini.yaml"
    recipe.write_text(MINI.replace("width: {int: [2, 64]}",
                                   "width: {choice: [2, 4]}\n  variant: {choice: [1, 8]}"))
    result = cnnbuilder.tune(recipe, dataset=small_digits, output=tmp_path / "search", max_trials=4,
                             epochs=1, batch_size=64, seed=1)
    printed = capsys.readouterr().out
    trials = result["trials"]
    skipped = [t for t in trials if t["status"] == "skipped"]
    assert skipped and len(trials) == 4
    running = [int(n) for n in re.findall(r"Running Trial #(\d+)", printed)]
    assert running == [t["number"] for t in trials] == [1, 2, 3, 4]
    for trial in skipped:  # the skip message follows that trial's own display
        block = printed.split(f"Running Trial #{trial['number']}\n")[1].split("Running Trial #")[0]
        assert f"Trial {trial['number']} skipped: " in block
    assert sorted(n for n, _ in starts(tmp_path / "search")) == [1, 2, 3, 4]
    assert read(tmp_path / "search" / "best" / "run.json")["tuning"]["number"] == result["best"]["number"]


@pytest.mark.slow
def test_a_plain_keras_tuner_search_compiles_each_hyper_recipe_model_once(mini, tmp_path, small_digits,
                                                                         monkeypatch):
    """HyperRecipe is a plain HyperModel: kt.RandomSearch builds, fits and scores it. Given
    its dataset, each trial's model is compiled once, for that dataset's steps."""
    compiled = []
    compile_model = keras.Model.compile

    def counting(model, *args, **kwargs):
        compiled.append(model.name)
        return compile_model(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", counting)
    hyper = HyperRecipe(mini, data=small_digits, training={"batch_size": 64}, epochs=1)
    search = kt.RandomSearch(hypermodel=hyper, objective="val_accuracy", max_trials=2,
                             directory=str(tmp_path), project_name="plain", seed=1)
    compiled.clear()  # KerasTuner builds one model to declare the space; count the trials'
    search.search(small_digits, verbose=0)
    assert len(search.oracle.trials) == 2
    assert all(t.status == "COMPLETED" and t.score is not None for t in search.oracle.trials.values())
    assert len(compiled) == 2, compiled  # once per trial: build, never again in fit
    best = search.get_best_models(1)[0]
    assert best.count_params() == cnnbuilder.build(
        mini, input_shape=(8, 8, 1), classes=10,
        **search.get_best_hyperparameters(1)[0].values).count_params()

    # Without its dataset, build compiles for unknown data and fit again for the Dataset.
    compiled.clear()
    unbound = HyperRecipe(mini, training={"batch_size": 64}, epochs=1)
    hp = kt.HyperParameters()
    unbound.declare_hyperparameters(hp)
    model = unbound.build(hp)
    history = unbound.fit(hp, model, small_digits, verbose=0)
    assert len(compiled) == 2 and len(history.history["val_accuracy"]) == 1
    steps = cnnbuilder.training.steps_per_epoch(small_digits, 64)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == steps
