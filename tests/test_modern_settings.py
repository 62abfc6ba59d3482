"""Issue 24's training settings without TensorFlow: ema, drop_path, loss, lamb, the new
augmentations and their options, the RSB presets (Wightman et al. 2021, Table 1), what
`show --training` reports of them, and the bad input each is refused with."""

from __future__ import annotations

import pytest

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.presets import PRESETS
from cnnbuilder.recipe.training import training_config
from cnnbuilder.recipe.training_plan import dataset_augment, describe
from cnnbuilder.zoo import load_recipe
from helpers import TINY_RECIPE, write

pytestmark = pytest.mark.fast


def recipe_error(tmp_path, training: str, family: str = "resnet_cifar") -> str:
    text = TINY_RECIPE.replace("metadata: {", f"metadata: {{family: {family}, ") + f"training:\n{training}"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, "bad.yaml", text))
    return str(info.value)


@pytest.mark.parametrize(("training", "field", "expected"), [
    ("  ema: {decay: 1.0}\n", "training.ema", "ema.decay = 1.0: expected a number in (0, 1)"),
    ("  ema: {decay: 0}\n", "training.ema", "ema.decay = 0"),
    ("  ema: {decay: 0.9, warmpu: true}\n", "training.ema", "expected {decay: d}"),
    ("  drop_path: 1.0\n", "training.drop_path", "expected a number in [0, 1)"),
    ("  drop_path: -0.1\n", "training.drop_path", "expected a number in [0, 1)"),
    ("  augment: [{mixup: {alpha: 0}}]\n", "training.augment", "mixup alpha = 0: expected a number > 0"),
    ("  augment: [{cutmix: {alpha: -1}}]\n", "training.augment", "cutmix alpha = -1"),
    ("  augment: [{randaugment: {n: 2, mag: 9}}]\n", "training.augment", "no option 'mag'"),
    ("  augment: [mixpu]\n", "training.augment", "Did you mean 'mixup'?"),
    ("  preset: rsb_a4\n", "training.preset", "Did you mean 'rsb_a"),
    ("  augment: [mixup]\n  loss: sparse_ce\n", "training.loss", "soft (mixed) targets"),
    ("  optimizer: lamb\n  weight_decay_mode: l2\n", "training.weight_decay_mode", "lamb decays"),
])
def test_bad_settings_name_file_line_and_field(tmp_path, training, field, expected):
    message = recipe_error(tmp_path, training)
    assert "bad.yaml" in message and "line" in message and field in message, message
    assert expected in message


def test_a_preset_that_does_not_fit_the_family_is_refused_at_its_line(tmp_path):
    message = recipe_error(tmp_path, "  preset: rsb_a3\n", family="vgg")
    assert "bad.yaml" in message and "training.preset" in message
    assert "residual families" in message and "vgg" in message


def test_overrides_are_checked_with_where_they_come_from():
    for overrides, expected in ((dict(ema={"decay": 2}), "ema.decay = 2"),
                                (dict(drop_path=1), "drop_path = 1"),
                                (dict(preset="rsb_b1"), "Did you mean")):
        with pytest.raises(RecipeError, match="--training") as info:
            training_config({}, where="--training", **overrides)
        assert expected in str(info.value)


def test_each_preset_is_table_1_of_the_rsb_paper():
    """Wightman, Touvron, Jégou 2021, Table 1: A1/A2/A3 columns."""
    expected = {  # epochs, LR, WD, label smoothing, stochastic depth, RandAugment M, mixup α
        "rsb_a1": (600, 5e-3, 0.01, 0.1, 0.05, 7, 0.2),
        "rsb_a2": (300, 5e-3, 0.02, 0.0, 0.05, 7, 0.1),
        "rsb_a3": (100, 8e-3, 0.02, 0.0, 0.0, 6, 0.1),
    }
    for name, (epochs, rate, decay, smoothing, depth, magnitude, alpha) in expected.items():
        config = training_config({}, preset=name)
        assert (config.optimizer, config.loss, config.schedule, config.batch_size) == \
            ("lamb", "bce", "cosine", 2048)
        assert (config.length, config.unit, config.warmup) == (epochs, "epochs", 5)
        assert (config.learning_rate, config.weight_decay) == (rate, decay)
        assert (config.label_smoothing, config.drop_path, config.ema) == (smoothing, depth, None)
        options = {next(iter(a)): a[next(iter(a))] for a in config.augment if isinstance(a, dict)}
        assert (options["randaugment"]["m"], options["randaugment"]["std"]) == (magnitude, 0.5)
        assert options["mixup"]["alpha"] == alpha and options["cutmix"]["alpha"] == 1.0
        assert "random_erasing" not in options
        assert any("repeated augmentation" in d for d in config.departures)


def test_a_preset_goes_over_the_paper_and_under_the_callers_overrides():
    section = load_recipe("resnet20").training  # SGD, step schedule, 64k iterations
    config = training_config(section, preset="rsb_a3", epochs=10, learning_rate=0.004)
    assert (config.optimizer, config.schedule, config.unit, config.length) == ("lamb", "cosine", "epochs", 10)
    assert config.learning_rate == 0.004
    assert config.warmup == pytest.approx(5 * 10 / 100)  # the warm-up keeps its fraction
    # A recipe can name the preset in its own section too.
    assert training_config({**section, "preset": "rsb_a2"}).optimizer == "lamb"


def test_show_training_prints_the_resolved_preset_with_sources():
    recipe = load_recipe("resnet20")
    report = describe(recipe.training, name="resnet20", overrides={"preset": "rsb_a3"},
                      dataset="digits", steps_per_epoch=10)
    assert (report["optimizer"], report["loss"], report["preset"]) == ("lamb", "bce", "rsb_a3")
    assert report["sources"]["optimizer"].startswith("preset rsb_a3")
    assert "Table 1" in report["source"] and report["sources"]["learning_rate"] == "preset rsb_a3"
    # On digits the paper's crop and flip give way to translate; the rest of the preset stays.
    assert report["augment"][0] == "translate"
    names = [next(iter(a)) if isinstance(a, dict) else a for a in report["augment"]]
    assert names == ["translate", "randaugment", "mixup", "cutmix"]
    assert any("repeated augmentation" in line for line in report["departures"])


def test_new_settings_are_shown_with_their_source():
    report = describe({}, overrides={"ema": 0.999, "drop_path": 0.1, "loss": "bce"})
    assert report["ema"] == {"decay": 0.999, "warmup": False}
    assert (report["drop_path"], report["loss"]) == (0.1, "bce")
    assert report["sources"]["ema"] == report["sources"]["drop_path"] == "override"
    assert describe({})["ema"] is None and describe({})["drop_path"] == 0.0


def test_augment_names_and_mappings_normalize_with_defaults():
    config = training_config({}, augment=["crop", "randaugment", {"mixup": {"alpha": 0.4}}, "cutmix"])
    assert config.augment[0] == "crop"
    assert config.augment[1] == {"randaugment": {"n": 2, "m": 9, "std": 0.0, "p": 0.5}}
    assert config.augment[2] == {"mixup": {"alpha": 0.4}}
    assert config.augment[3] == {"cutmix": {"alpha": 1.0, "switch": 0.5}}
    # The old forms still hold.
    assert training_config({}, augment="none").augment == ()
    assert training_config({}, augment=["crop", "flip"]).augment == ("crop", "flip")
    assert dataset_augment("digits", ("crop", "flip", "mixup")) == ("translate", "mixup")


def test_every_preset_cites_the_paper():
    for preset in PRESETS.values():
        assert "2110.00476" in preset["source"] and "Table 1" in preset["source"]

