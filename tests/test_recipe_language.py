"""Recipe-language tests: pure Python, no TensorFlow (checked in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from cnnbuilder import RecipeError, list_recipes, load_recipe
from cnnbuilder.recipe.expressions import ExpressionError, evaluate, substitute
from helpers import TINY_RECIPE, write


def tiny(**changes) -> dict:
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe.update(changes)
    return recipe


# ----------------------------------------------------------------------------- expressions


def test_expression_values_keep_their_type():
    names = {"blocks": [6, 12, 24, 16], "growth_rate": 32, "depth": 100}
    assert substitute("${blocks[2]}", names) == 24
    assert substitute("${growth_rate * 2}", names) == 64
    assert substitute("${[(depth - 4) // 6] * 3}", names) == [16, 16, 16]
    assert substitute("${int(growth_rate * 0.5)}", names) == 16
    assert substitute("${max(1, min(blocks))}", names) == 6
    assert substitute("conv${blocks[0] + 1}", names) == "conv7"
    assert substitute("${12 if depth > 50 else 6}", names) == 12


@pytest.mark.parametrize(
    "source",
    ["__import__('os')", "blocks.__class__", "open('x')", "(lambda: 1)()", "2 ** 10",
     "[x for x in blocks]", "exec('1')", "unknown_name + 1"],
)
def test_expressions_cannot_reach_beyond_params(source):
    with pytest.raises(ExpressionError):
        evaluate(source, {"blocks": [1, 2]})


def test_list_repetition_is_bounded():
    with pytest.raises(ExpressionError, match="repetition"):
        evaluate("[1] * 100000000", {})


# ----------------------------------------------------------------------------- params


def test_params_defaults_and_overrides():
    recipe = load_recipe(tiny())
    assert recipe.params == {"width": 8, "units": [1, 1]}
    plan = recipe.plan(width=4, units=[2, 3])
    assert plan.params == {"width": 4, "units": [2, 3]}
    identity_steps = [s for s in plan.steps if s.block == "identity"]
    assert len(identity_steps) == 2 + 2
    assert identity_steps[-1].fields["filters"] == 8


def test_params_may_derive_from_params_and_follow_overrides():
    recipe = load_recipe(tiny(params={"depth": 8, "width": 8, "units": "${[(depth - 2) // 6, 1]}"}))
    assert recipe.params["units"] == [1, 1]
    assert recipe.plan(depth=14).params["units"] == [2, 1]


def test_unknown_override_suggests_the_closest_param():
    with pytest.raises(RecipeError, match=r"unknown param 'widht'.*Did you mean 'width'"):
        load_recipe(tiny()).plan(widht=3)


def test_override_of_the_wrong_type_is_rejected():
    with pytest.raises(RecipeError, match=r"param 'width' expects an integer.*got 'wide'"):
        load_recipe(tiny()).plan(width="wide")


def test_cyclic_params_are_reported():
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tiny(params={"width": "${units}", "units": "${width}"}))


def test_shipped_densenet_exposes_the_paper_params():
    params = load_recipe("densenet121").params
    assert params == {"blocks": [6, 12, 24, 16], "growth_rate": 32, "compression": 0.5, "bn_size": 4,
                      "memory_efficient": False}
    assert load_recipe("resnet50").params == {"blocks": [3, 4, 6, 3]}


# ----------------------------------------------------------------------------- extends


def test_extends_merges_maps_and_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", TINY_RECIPE)
    child = write(tmp_path, "child.yaml", """\
        name: child
        extends: base.yaml
        metadata: {classes: 7}
        params: {units: [2, 2]}
        head:
          - global_pool: max
          - fc: {units: "${classes}"}
        """)
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.metadata == {"input_shape": [16, 16, 3], "classes": 7}
    assert recipe.params == {"width": 8, "units": [2, 2]}
    head = [s for s in recipe.default_plan.steps if s.section == "head"]
    assert [s.block for s in head] == ["global_pool", "fc"]
    assert head[0].fields["type"] == "max" and head[1].fields["units"] == 7


def test_extends_a_shipped_recipe_by_name(tmp_path):
    path = write(tmp_path, "narrow.yaml", "name: narrow\nextends: densenet121\nparams: {growth_rate: 12}\n")
    assert load_recipe(path).params["growth_rate"] == 12


def test_missing_extends_target(tmp_path):
    path = write(tmp_path, "a.yaml", "name: a\nextends: no_such_recipe\n")
    with pytest.raises(RecipeError, match=r"a.yaml, line 2, field extends: extends 'no_such_recipe'"):
        load_recipe(path)


def test_cyclic_extends(tmp_path):
    write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    with pytest.raises(RecipeError, match=r"cyclic extends: a -> b -> a"):
        load_recipe(tmp_path / "a.yaml")


# ----------------------------------------------------------------------------- errors


def error_for(tmp_path, text: str) -> str:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    message = error_for(tmp_path, "name: bad\nstem:\n  - conv: {filters: 8\n")
    assert "bad.yaml, line 4" in message and "invalid YAML" in message


def test_python_tags_are_rejected_not_executed(tmp_path):
    marker = tmp_path / "executed"
    message = error_for(tmp_path, f"""\
        name: bad
        params:
          evil: !!python/object/apply:os.system ["touch {marker}"]
        """)
    assert "line 3" in message and "python/object/apply" in message and "not allowed" in message
    assert not marker.exists()


def test_expression_beyond_params_is_rejected(tmp_path):
    message = error_for(tmp_path, """\
        name: bad
        params: {width: 8}
        stem:
          - conv: {filters: "${__import__('os').getpid()}"}
        """)
    assert "bad.yaml, line 4, field stem[0].conv.filters" in message and "not allowed" in message


def test_unknown_block_has_did_you_mean(tmp_path):
    message = error_for(tmp_path, "name: bad\nstem:\n  - bottlenek: {filters: 8}\n")
    assert "line 3" in message and "unknown block 'bottlenek'" in message
    assert "Did you mean 'bottleneck'" in message


def test_unknown_field_has_did_you_mean(tmp_path):
    message = error_for(tmp_path, "name: bad\nstem:\n  - dense: {layers: 2, growth_rat: 4}\n")
    assert "line 3, field stem[0].dense.growth_rat" in message
    assert "Did you mean 'growth_rate'" in message


def test_unknown_top_level_key(tmp_path):
    message = error_for(tmp_path, "name: bad\nstage:\n  - {}\n")
    assert "line 2" in message and "Did you mean 'stages'" in message


@pytest.mark.parametrize(
    "block, received, expected",
    [
        ("conv: {filters: eight}", "'eight'", "integer"),
        ("conv: {filters: 0}", "0", "integer >= 1"),
        ("conv: {filters: -3}", "-3", "integer >= 1"),
        ("dense: {layers: 2, growth_rate: 2.5}", "2.5", "integer"),
        ("transition: {compression: 1.5}", "1.5", "number > 0 and <= 1"),
        ("pool: {type: median}", "'median'", "max | avg"),
        ("dropout: 1.0", "1.0", "number >= 0 and < 1"),
        ("activation: rleu", "'rleu'", "Did you mean 'relu'"),
        ("conv: {filters: 4, kernel: [3, 0]}", "[3, 0]", "[height, width]"),
    ],
)
def test_wrong_types_and_sizes_name_value_and_expectation(tmp_path, block, received, expected):
    message = error_for(tmp_path, f"name: bad\nmetadata: {{input_shape: [32, 32, 3]}}\nstem:\n  - {block}\n")
    assert "bad.yaml, line 4" in message
    assert received in message and expected in message


def test_missing_required_field(tmp_path):
    message = error_for(tmp_path, "name: bad\nstem:\n  - dense: {layers: 3}\n")
    assert "needs field 'growth_rate'" in message and "line 3" in message


def test_input_too_small_for_the_downsampling(tmp_path):
    message = error_for(tmp_path, """\
        name: bad
        metadata: {input_shape: [8, 8, 3]}
        stem:
          - conv: {filters: 4, stride: 2}
          - pool: {size: 2}
          - pool: {size: 2}
          - pool: {size: 2}
        """)
    assert "line 7" in message and "too small" in message and "(8, 8, 3)" in message


def test_input_too_small_when_planning_a_shipped_recipe():
    # As keras.applications, the ImageNet networks refuse inputs under 32×32.
    with pytest.raises(RecipeError, match=r"at least 32x32 for resnet50; received input_shape=\(16, 16, 3\)"):
        load_recipe("resnet50").plan(input_shape=(16, 16, 3))
    assert load_recipe("resnet50").plan(input_shape=(32, 32, 3)).steps[-1].output_shape == (1000,)


def test_identity_unit_that_changes_shape_is_rejected(tmp_path):
    message = error_for(tmp_path, """\
        name: bad
        metadata: {input_shape: [8, 8, 3]}
        stem:
          - identity: {filters: 16}
        """)
    assert "identity unit must keep the shape" in message and "line 4" in message


def test_negative_repeat_from_a_param(tmp_path):
    with pytest.raises(RecipeError, match=r"repeat = -1.*>= 0"):
        load_recipe("resnet50").plan(blocks=[0, 4, 6, 3])


def test_duplicate_layer_names(tmp_path):
    message = error_for(tmp_path, """\
        name: bad
        stem:
          - conv: {filters: 4, name: same}
          - conv: {filters: 4, name: same}
        """)
    assert "used twice" in message


def test_unknown_recipe_name_suggests_closest():
    with pytest.raises(RecipeError, match=r"unknown recipe 'densenet12'.*Did you mean 'densenet121'"):
        load_recipe("densenet12")


def test_dict_recipe_errors_name_the_field():
    with pytest.raises(RecipeError, match=r"field stem\[0\].conv.filters"):
        load_recipe({"name": "d", "stem": [{"conv": {"filters": "x"}}]})


# ----------------------------------------------------------------------------- registry


def test_list_recipes_sorted_with_wildcards():
    names = list_recipes()
    assert names == sorted(names)
    for name in ["resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2",
                 "densenet121", "densenet169", "densenet201", "vgg16", "vgg19"]:
        assert name in names
    assert set(list_recipes("resnet*")) >= {"resnet50", "resnet152v2"}
    assert all(n.startswith("vgg") for n in list_recipes("vgg*"))
    assert list_recipes("no-such-*") == []


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads_with_metadata(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.reference and recipe.description
    assert isinstance(recipe.metadata.get("params"), int)
    assert len(recipe.default_input_shape) == 3


def test_recipe_language_does_not_import_tensorflow():
    code = textwrap.dedent("""
        import sys, cnnbuilder
        from cnnbuilder import load_recipe, list_recipes
        for name in list_recipes():
            load_recipe(name).plan()
        bad = [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
