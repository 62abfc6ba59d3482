"""Issue 23, the edges a user meets (pure Python, fast tier): every flag and keyword value
checked by one helper (`cnnbuilder.recipe.checks`), names refused when a recipe loads,
non-finite numbers, a `tune:` range outside a param's declaration blamed on the entry."""

from __future__ import annotations

import argparse
import math
import textwrap

import pytest

import cnnbuilder
from cnnbuilder import cli_args
from cnnbuilder.errors import RecipeError, UsageError
from cnnbuilder.recipe import checks
from cnnbuilder.recipe.search_space import recipe_space

pytestmark = pytest.mark.fast


def recipe_file(tmp_path, text: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("value", [-1, 2**32, "x", 1.5, True, None])
def test_seed_outside_0_to_2_32_is_refused_naming_the_label(value):
    with pytest.raises(UsageError, match=r"^--seed: expected an integer from 0 to 4,294,967,295"):
        checks.seed(value, "--seed")


@pytest.mark.parametrize("value", [0, 2**32 - 1, "17"])
def test_seed_in_range_is_accepted(value):
    assert checks.seed(value) == int(value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "0", "-1", "x", ".inf"])
def test_positive_float_flag_refuses_non_finite_and_non_positive(text):
    with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0"):
        cli_args.positive_float(text)


def test_non_negative_float_flag_takes_zero_but_not_nan():
    assert cli_args.non_negative_float("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        cli_args.non_negative_float("nan")


@pytest.mark.parametrize("text", ["4294967297,32,1", "99999999999999999999,32,1", "0,32,1",
                                  "32,32", "a,b,c", "32,32,none"])
def test_input_shape_flag_refuses_overflows_and_bad_forms(text):
    with pytest.raises(UsageError, match="^--input-shape expects HEIGHT,WIDTH,CHANNELS"):
        cli_args.parse_shape(text)


@pytest.mark.parametrize("value", ["32,32,1", (32, 32), (0, 32, 1), (2**31, 32, 1), (32.0, 32, 1)])
def test_input_shape_keyword_is_named(value):
    with pytest.raises(UsageError, match="^input_shape: expected"):
        checks.input_shape(value)


def test_classes_flag_refuses_a_count_past_32_bits():
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 2,147,483,647"):
        cli_args.classes("1000000000000")


@pytest.mark.parametrize("value", ["a/b", "x y", "", "1abc", "a\nb"])
def test_names_keras_would_refuse_are_refused(value):
    with pytest.raises(UsageError, match="^name: expected a name of letters"):
        checks.name(value)


def test_backend_is_checked_before_keras_is_imported():
    assert checks.environment_backend({"KERAS_BACKEND": "jax"}) == "jax"
    assert checks.environment_backend({}) is None
    with pytest.raises(UsageError, match="KERAS_BACKEND='bogus'"):
        checks.environment_backend({"KERAS_BACKEND": "bogus"})


def test_augment_none_is_accepted_alone_and_never_offered_in_a_list():
    assert cli_args.parse_augment("none") == []
    assert cli_args.parse_augment("crop,flip") == ["crop", "flip"]
    with pytest.raises(UsageError, match="write none alone") as caught:
        cli_args.parse_augment("none,crop")
    with pytest.raises(UsageError) as unknown:
        cli_args.parse_augment("crop,zoom")
    assert "'zoom'" in str(unknown.value) and "(or none alone)" in str(unknown.value)
    assert "none" in str(caught.value)


@pytest.mark.parametrize("block_name", ["a/b", "x y"])
def test_a_block_name_keras_refuses_fails_when_the_recipe_loads(tmp_path, block_name):
    path = recipe_file(tmp_path, f"""\
        name: named
        metadata: {{input_shape: [8, 8, 1], classes: 2}}
        stem:
          - conv: {{filters: 4, name: "{block_name}"}}
        head:
          - global_pool
          - fc: ${{classes}}
        """)
    with pytest.raises(RecipeError, match=r"r\.yaml, line 4.*conv\.name"):
        cnnbuilder.load_recipe(path)


def test_a_recipe_name_with_a_slash_is_refused(tmp_path):
    path = recipe_file(tmp_path, """\
        name: a/b
        head:
          - flatten
        """)
    with pytest.raises(RecipeError, match="line 1"):
        cnnbuilder.load_recipe(path)


@pytest.mark.parametrize("setting", ["learning_rate=.inf", "weight_decay=.nan", "momentum=.nan"])
def test_training_overrides_must_be_finite(setting):
    from cnnbuilder.recipe.training import training_config

    overrides = cli_args.parse_assignments([setting], "--training")
    assert not math.isfinite(next(iter(overrides.values())))
    with pytest.raises(RecipeError, match=setting.split("=")[0]):
        training_config({}, where="--training", **overrides)


def test_input_shape_too_small_blames_the_flag_not_the_recipe_line():
    from cnnbuilder.recipe.params import arguments_from

    recipe = cnnbuilder.load_recipe("lenet5")
    with arguments_from({"input_shape": "--input-shape"}):
        with pytest.raises(RecipeError) as caught:
            recipe.plan(input_shape=(8, 8, 1))
    assert str(caught.value).startswith("--input-shape 8,8,1: the input is too small")
    with pytest.raises(RecipeError, match=r"^input_shape=\(8, 8, 1\)"):
        recipe.plan(input_shape=(8, 8, 1))


@pytest.mark.parametrize("entry, field", [("width: {choice: [16, 8192]}", "tune.width.choice[1]"),
                                          ("depth: {int: [2, 50], step: 6}", "tune.depth.int")])
def test_a_tune_range_outside_the_declaration_names_the_tune_entry(tmp_path, entry, field):
    path = recipe_file(tmp_path, f"""\
        extends: resnet20
        name: badtune
        tune:
          {entry}
        """)
    with pytest.raises(RecipeError) as caught:
        recipe_space(cnnbuilder.load_recipe(path))
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4, field {field}:"), message
    assert "resnet20.yaml, line 2" in message and "--set" not in message


@pytest.mark.parametrize("expression, told", [("${1/0}", "division by zero"),
                                              ("${nope}", "unknown name 'nope'")])
def test_a_bad_set_expression_is_blamed_on_set_not_the_recipe_line(expression, told):
    from cnnbuilder.recipe.params import overrides_from

    recipe = cnnbuilder.load_recipe("lenet5")
    with overrides_from("--set"), pytest.raises(RecipeError) as caught:
        recipe.plan(activation=expression)
    message = str(caught.value)
    assert message.startswith(f"--set activation='{expression}': bad expression") and told in message
    assert "lenet5.yaml" not in message
