"""The `training:` section without TensorFlow: settings, their rules, the run's layout in
steps, what `show --training` reports, and the shipped recipes' sections."""

from __future__ import annotations

import pytest

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.training import CHECKS, TrainingConfig, training_config
from cnnbuilder.recipe.training_plan import describe, layout, same_dataset
from cnnbuilder.zoo import list_recipes, load_recipe
from helpers import write

pytestmark = pytest.mark.fast

HE = {"iterations": 64000, "boundaries": [32000, 48000], "schedule": "step", "batch_size": 128,
      "dataset": "cifar10", "dataset_size": 45000}


def recipe_error(tmp_path, training: str) -> str:
    path = write(tmp_path, "bad.yaml", f"name: bad\nstem:\n  - conv: 8\ntraining:\n{training}")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value)


def test_resnet20_trains_with_plain_momentum_and_l2_decay_in_iterations():
    config = training_config(load_recipe("resnet20").training)
    assert (config.optimizer, config.momentum, config.nesterov) == ("sgd", 0.9, False)
    assert (config.weight_decay, config.weight_decay_mode) == (1e-4, "l2")
    assert (config.unit, config.length, config.boundaries) == ("iterations", 64000, (32000, 48000))
    assert config.iterations == 64000 and config.epochs == round(64000 * 128 / 45000)


def test_every_recipe_has_a_training_section_with_its_source_and_a_reported_entry():
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.training.get("source"), name
        assert recipe.training.get("weight_decay_mode") == "l2", name
        reported = recipe.metadata["reported"]
        assert reported.get("error") or reported.get("top5_error") or reported.get("notes"), name


def test_resnet110_warms_up_at_001_until_the_error_is_below_80_percent():
    config = training_config(load_recipe("resnet110").training)
    assert (config.warmup, config.warmup_learning_rate, config.warmup_until_error) == (400, 0.01, 0.8)
    assert config.boundaries == (32000, 48000)  # inherited from resnet20


def test_an_epochs_override_keeps_the_schedule_shape():
    config = training_config(HE, epochs=20)
    assert (config.unit, config.length) == ("epochs", 20)
    assert config.boundaries == pytest.approx((10, 15))
    assert config.scaled_from == ("iterations", 64000)
    warm = training_config({**HE, "warmup": 400, "warmup_learning_rate": 0.01}, iterations=6400)
    assert warm.warmup == pytest.approx(40) and warm.boundaries == pytest.approx((3200, 4800))
    # boundaries given with the new length are in its unit, unscaled
    assert training_config(HE, epochs=20, boundaries=[5]).boundaries == (5,)


def test_layout_in_iterations_on_the_papers_dataset_and_in_epochs_on_another():
    config = training_config(HE)
    own = layout(config, steps_per_epoch=352, dataset="tfds:cifar10")
    assert (own.total_steps, own.boundaries, own.epochs) == (64000, (32000, 48000), 182)
    other = layout(config, steps_per_epoch=10, dataset="digits")
    epochs = 64000 * 128 / 45000
    assert other.unit == "epochs" and other.length == pytest.approx(epochs)
    assert other.total_steps == round(epochs * 10)
    assert [b / other.total_steps for b in other.boundaries] == pytest.approx([0.5, 0.75], abs=0.01)
    assert "182 epochs" in other.notes[0]


def test_layout_of_fractions_and_of_a_step_every_n_epochs():
    plan = layout(training_config({"schedule": "step", "epochs": 300}), steps_per_epoch=4)
    assert plan.boundaries == (600, 900) and plan.total_steps == 1200
    every = layout(training_config({"schedule": "step", "epochs": 20, "step_every": 8}), 5)
    assert every.boundaries == (40, 80)
    assert layout(training_config({"schedule": "cosine"}), 5).boundaries == ()


def test_same_dataset():
    assert same_dataset("tfds:cifar10", "cifar10") and same_dataset("cifar10", "cifar10")
    assert not same_dataset("digits", "cifar10") and not same_dataset("tfds:cifar100", "cifar10")
    assert not same_dataset("digits", "")


@pytest.mark.parametrize("training, field, expected", [
    ("  iterations: 1000\n  boundaries: [500, 1000]\n", "boundaries", "past the end of training (1000 iterations)"),
    ("  epochs: 10\n  warmup: 10\n", "warmup", "not shorter than the run (10 epochs)"),
    ("  optimizer: adamw\n  weight_decay_mode: l2\n", "weight_decay_mode", "adamw decays the weights decoupled"),
    ("  epochs: 10\n  iterations: 100\n", "iterations", "give the run's length once"),
    ("  warmup_until_error: 0.8\n", "warmup_until_error", "needs a warmup length"),
    ("  weight_decay_mode: coupled\n", "weight_decay_mode", "expected one of l2, decoupled"),
    ("  boundaries: [30, 20]\n", "boundaries", "an increasing list"),
    ("  shedule: step\n", "shedule", "Did you mean 'schedule'"),
])
def test_bad_settings_name_file_line_and_field(tmp_path, training, field, expected):
    message = recipe_error(tmp_path, training)
    assert f"bad.yaml, line " in message and f"field training.{field}: " in message
    assert expected in message


def test_bad_overrides_name_where_they_come_from():
    with pytest.raises(RecipeError, match=r"--training: boundaries = \[70000\]: past the end"):
        training_config(HE, where="--training", boundaries=[70000])
    with pytest.raises(RecipeError, match=r"--training: warmup = 30: not shorter than the run"):
        training_config({"epochs": 300}, where="--training", epochs=20, warmup=30)
    with pytest.raises(RecipeError, match="adamw decays the weights decoupled"):
        training_config({"weight_decay_mode": "l2"}, optimizer="adamw")
    with pytest.raises(RecipeError, match="label_smoothing = 1.5"):
        training_config({}, label_smoothing=1.5)


def test_to_dict_is_the_recipe_form():
    data = training_config(HE).to_dict()
    assert data["iterations"] == 64000 and "epochs" not in data and "unit" not in data
    assert set(TrainingConfig().to_dict()) <= set(CHECKS)


def test_describe_has_the_design_keys_sources_and_departures():
    section = load_recipe("resnet20").training
    report = describe(section, name="resnet20", overrides={"label_smoothing": 0.1, "epochs": 20},
                      dataset="digits", steps_per_epoch=10)
    assert {"optimizer", "learning_rate", "momentum", "nesterov", "weight_decay",
            "weight_decay_mode", "batch_size", "unit", "length", "schedule", "augment",
            "label_smoothing", "dropout", "preprocessing", "source"} <= set(report)
    assert set(report["schedule"]) >= {"type", "boundaries", "factor", "warmup"}
    assert (report["unit"], report["length"], report["schedule"]["boundaries"]) == ("epochs", 20, [10, 15])
    assert report["sources"]["label_smoothing"] == "override"
    assert report["sources"]["augment"] == "dataset digits" and report["augment"] == ["translate"]
    assert report["sources"]["momentum"] == section["source"]
    departures = "\n".join(report["departures"])
    assert "label_smoothing: 0.1 (override; default: 0.0)" in departures
    assert "epochs: 20 (override; the recipe: 64000 iterations)" in departures
    assert "for digits" in departures and "per-pixel mean" in departures
    # on the paper's own data the run is the paper's
    own = describe(section, name="resnet20")
    assert (own["unit"], own["length"], own["schedule"]["boundaries"]) == ("iterations", 64000, [32000, 48000])
    assert own["nesterov"] is False and own["augment"] == ["crop", "flip"]


def test_describe_a_recipe_without_a_section():
    report = describe({}, name="mine")
    assert any("generic defaults" in line for line in report["departures"])
    assert set(report["sources"].values()) == {"default"}



def test_an_exponential_schedule_steps_after_every_epoch():
    # Jégou et al. 2017: "an exponential decay of 0.995 after each epoch".
    config = training_config({"schedule": "exponential", "step_factor": 0.995, "epochs": 6})
    assert layout(config, 4).boundaries == (4, 8, 12, 16, 20)
    # --epochs keeps the decay per epoch: the paper's rate after each epoch, not its total.
    assert layout(training_config({"schedule": "exponential", "epochs": 3}), 2).boundaries == (2, 4)
