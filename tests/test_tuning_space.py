"""The recipe `tune:` section: parsing, messages, inheritance, shipped search spaces.

Pure Python: nothing here imports TensorFlow or KerasTuner (the fast tier).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import cnnbuilder
from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.search_space import check_reachable, parse_space, recipe_space, tune_section

pytestmark = pytest.mark.fast

PARAMS = {"growth_rate": 12, "depth": 100, "compression": 0.5, "bottleneck": True,
          "blocks": [6, 12, 24, 16], "stem_channels": "${2 * growth_rate}"}


def space(section):
    return parse_space(section, params=PARAMS)


def test_the_three_forms_and_their_options():
    s = space({
        "growth_rate": {"choice": [12, 24, 40], "default": 24},
        "depth": {"int": [40, 100], "step": 6},
        "compression": {"float": [0.3, 0.7]},
        "training": {"learning_rate": {"float": [1.0e-3, 0.3], "log": True}},
    })
    assert s.keys == ["growth_rate", "depth", "compression", "training.learning_rate"]
    growth, depth, compression, rate = s
    assert growth.keras_tuner() == ("Choice", {"name": "growth_rate", "values": [12, 24, 40], "default": 24})
    assert depth.keras_tuner() == ("Int", {"name": "depth", "min_value": 40, "max_value": 100, "step": 6})
    assert compression.keras_tuner()[0] == "Float"
    assert rate.keras_tuner() == ("Float", {"name": "training.learning_rate", "min_value": 1e-3,
                                            "max_value": 0.3, "sampling": "log"})
    assert depth.grid(100) == list(range(40, 101, 6))
    params, training = s.split({"growth_rate": 40, "depth": 46, "compression": 0.5,
                                "training.learning_rate": 0.01, "tuner/epochs": 3})
    assert params == {"growth_rate": 40, "depth": 46, "compression": 0.5}
    assert training == {"learning_rate": 0.01}
    assert s.hyperparameters({"growth_rate": 40}) == {
        "growth_rate": 40, "depth": 40, "compression": 0.3, "training": {"learning_rate": 1e-3}}


def test_lists_and_booleans_travel_as_json_labels():
    s = space({"blocks": {"choice": [[6, 12, 24, 16], [6, 12, 32, 32]]},
               "bottleneck": {"choice": [True, False]}})
    blocks, bottleneck = s
    method, kwargs = blocks.keras_tuner()
    assert method == "Choice" and kwargs["values"] == ["[6, 12, 24, 16]", "[6, 12, 32, 32]"]
    assert blocks.decode("[6, 12, 32, 32]") == [6, 12, 32, 32]
    assert bottleneck.decode(bottleneck.encode(False)) is False
    assert s.combinations() == [
        ({"blocks": [6, 12, 24, 16], "bottleneck": True}, {}),
        ({"blocks": [6, 12, 24, 16], "bottleneck": False}, {}),
        ({"blocks": [6, 12, 32, 32], "bottleneck": True}, {}),
        ({"blocks": [6, 12, 32, 32], "bottleneck": False}, {}),
    ]


@pytest.mark.parametrize("section, message", [
    ({"growth": {"choice": [12]}}, r"unknown param 'growth'.*Did you mean 'growth_rate'"),
    ({"growth_rate": [12, 24]}, r"expected \{choice: \[a, b, \.\.\.\]\}"),
    ({"growth_rate": {"choice": [12], "int": [1, 2]}}, r"exactly one of choice, int, float"),
    ({"growth_rate": {"choice": []}}, r"non-empty list"),
    ({"growth_rate": {"choice": [12, 12]}}, r"listed twice"),
    ({"growth_rate": {"choice": [12, "x"]}}, r"expects an integer"),
    ({"depth": {"int": [100, 40]}}, r"low <= high"),
    ({"depth": {"int": [40, 100], "step": 6, "log": True}}, r"cannot be combined"),
    ({"depth": {"int": [40, 100], "stepp": 6}}, r"unknown key 'stepp'.*Did you mean 'step'"),
    ({"depth": {"float": [40.0, 100.0]}}, r"is an integer.*use \{int: \[low, high\]\}"),
    ({"compression": {"float": [0.0, 0.7], "log": True}}, r"log: true needs low > 0"),
    ({"growth_rate": {"int": [4, 16], "default": 3}}, r"default 3 is not a value"),
    ({"training": {"epochs": {"choice": [1, 2]}}}, r"epochs is the tuner's budget"),
    ({"training": {"learnin_rate": {"float": [0.1, 1.0]}}}, r"Did you mean 'learning_rate'"),
    ({"training": {"optimizer": {"choice": ["sgd", "lars"]}}}, r"expects one of sgd, adam"),
    ("depth", r"expected a mapping"),
])
def test_bad_sections_name_the_field(section, message):
    with pytest.raises(RecipeError, match=message) as info:
        space(section)
    assert "field tune" in str(info.value)


def test_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: bad
        extends: densenet_bc100_k12
        tune:
          growth_rate: {choice: [8, 12]}
          depth: {int: [40, 100], step: 0}
        """))
    recipe = cnnbuilder.load_recipe(path)
    with pytest.raises(RecipeError) as info:
        recipe_space(recipe)
    message = str(info.value)
    assert str(path) in message and "line 5" in message and "tune.depth.step" in message
    assert "expected a positive integer, got 0" in message


def test_children_inherit_replace_and_remove_entries(tmp_path):
    child = {"name": "child", "extends": "densenet_bc100_k12",
             "tune": {"growth_rate": {"choice": [4, 8]}, "depth": None,
                      "compression": {"float": [0.3, 0.7]}}}
    s = recipe_space(child)
    assert s.keys == ["growth_rate", "compression"]
    growth = s.params[0]
    # replaced whole: the parent's `default: 12` is not inherited
    assert growth.values == (4, 8) and growth.default is None
    # another form replaces the parent's int range (its step and default go with it)
    path = tmp_path / "child.yaml"
    path.write_text("name: child\nextends: densenet_bc100_k12\ntune:\n  depth: {choice: [10, 16]}\n")
    depth = {d.name: d for d in recipe_space(str(path))}["depth"]
    assert (depth.kind, depth.values, depth.step, depth.default) == ("choice", (10, 16), None, None)
    assert recipe_space("resnet56").keys == ["depth", "width"]


def test_a_space_with_no_valid_network_is_refused_before_training():
    recipe = cnnbuilder.load_recipe("densenet_bc100_k12")
    s = recipe_space(recipe, {"depth": {"int": [41, 45]}})

    def check(params, training):
        try:
            recipe.plan(input_shape=(32, 32, 3), **params)
        except RecipeError as exc:
            return str(exc)
        return None

    with pytest.raises(RecipeError, match=r"none of its 5 combinations gives a valid network.*"
                                          r"depth - 4 must be a positive multiple of 6"):
        check_reachable(s, check)
    check_reachable(recipe_space(recipe, {"depth": {"int": [40, 46]}}), check)  # 40 and 46 build


SHIPPED = ["densenet40_k12", "densenet100_k12", "densenet100_k24", "densenet_bc100_k12",
           "densenet_bc250_k24", "densenet_bc190_k40", "resnet20", "resnet32", "resnet44",
           "resnet56", "resnet110"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_give_valid_networks_by_construction(name):
    recipe = cnnbuilder.load_recipe(name)
    s = recipe_space(recipe)
    tuned = {d.name for d in s}
    assert tuned == ({"growth_rate", "depth"} if name.startswith("densenet") else {"depth", "width"})
    points = s.combinations()
    assert points, "a finite space"
    for params, _ in points:  # every point plans: no trial of these spaces is ever skipped
        recipe.plan(input_shape=recipe.default_input_shape, **params)
    own = {k: recipe.params[k] for k in tuned}
    assert own in [p for p, _ in points], f"{name}'s own values are in its space"


def test_every_recipe_tune_section_parses():
    for name in cnnbuilder.list_recipes():
        recipe_space(cnnbuilder.load_recipe(name))


def test_the_space_module_does_not_import_tensorflow():
    code = ("import sys, cnnbuilder.recipe.search_space, cnnbuilder.plots.tuning; "
            "assert 'tensorflow' not in sys.modules and 'keras_tuner' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_recipe_loaded_from_a_dict_keeps_its_own_entries_apart_from_its_parents():
    child = {"name": "child", "extends": "densenet_bc100_k12", "tune": {"growth_rate": {"choice": [4, 8]}}}
    loaded = cnnbuilder.load_recipe(child)
    # replaced whole, not merged with the parent's entry (whose `default: 12` is not a choice)
    assert tune_section(loaded)["growth_rate"] == {"choice": [4, 8]}
    assert recipe_space(loaded).keys == recipe_space(child).keys == ["growth_rate", "depth"]


def test_recipe_space_loads_what_is_not_a_recipe_with_the_given_loader():
    seen = []

    def load(source):
        seen.append(source)
        return cnnbuilder.load_recipe(source)

    assert recipe_space("resnet56", load=load).keys == ["depth", "width"]
    recipe = cnnbuilder.load_recipe("resnet56")
    assert recipe_space(recipe, load=load).keys == ["depth", "width"]
    assert seen == ["resnet56"]  # a Recipe is used as it is


def test_tuned_training_settings_are_checked_with_the_training_table():
    with pytest.raises(RecipeError, match=r"tune.training.momentum.float: high 1.5: training setting "
                                          r"'momentum' expects a number in \[0, 1\)"):
        recipe_space("resnet20", {"training": {"momentum": {"float": [0.5, 1.5]}}})
    with pytest.raises(RecipeError, match=r"unknown training setting 'learning_rat'.*Did you mean 'learning_rate'"):
        recipe_space("resnet20", {"training": {"learning_rat": {"float": [0.01, 0.1]}}})
