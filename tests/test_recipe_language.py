"""Recipe-language tests: pure Python, no TensorFlow (the fast tier; see test_fast_tier.py)."""

from __future__ import annotations

import ast
import contextlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cnnbuilder import RecipeError, list_recipes, load_recipe
from cnnbuilder.recipe.expressions import ExpressionError, evaluate, substitute
from cnnbuilder.recipe.training import training_config
from helpers import TINY_RECIPE, write

pytestmark = pytest.mark.fast


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
                      "bn_epsilon": 1.001e-5, "memory_efficient": False}
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
    with pytest.raises(RecipeError, match=r"field stages\[1\]\.blocks\[1\]\.identity\.repeat: "
                                          r"identity\.repeat = -1.*>= 0"):
        load_recipe(tiny()).plan(units=[1, 0])


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


def test_list_recipes_in_natural_order_with_wildcards():
    names = list_recipes()
    # Digit runs compare as numbers: resnet18 < resnet34 < resnet50 < resnet101 < resnet152.
    resnets = [n for n in names if re.fullmatch(r"resnet\d+", n)]
    assert resnets == sorted(resnets, key=lambda n: int(n[len("resnet"):]))
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101")
    assert names.index("densenet121") < names.index("densenet169") < names.index("densenet264")
    assert names.index("vgg16") < names.index("vgg19")
    assert len(set(names)) == len(names)
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
    # The keras.applications module's mode with its weights, the data's statistics without.
    assert (recipe.metadata.get("preprocessing") == "dataset") == (
        "keras_application" not in recipe.metadata)


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


def test_the_recipe_package_imports_nothing_after_it():
    # recipe/ comes first: it may import errors.py and itself, never zoo.py, model/, training/...
    package = Path(__file__).resolve().parent.parent / "cnnbuilder" / "recipe"
    later = ("cnnbuilder.zoo", "cnnbuilder.model", "cnnbuilder.data", "cnnbuilder.training",
             "cnnbuilder.tuning", "cnnbuilder.serving", "cnnbuilder.plots", "cnnbuilder.cli")
    heavy = ("tensorflow", "keras", "jax", "torch", "numpy")
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [(path.name, n) for n in names if n.startswith(later) or n.split(".")[0] in heavy]
    assert found == []


# ----------------------------------------------------------------------------- training, metadata


def test_a_misspelt_training_setting_fails_when_the_recipe_loads(tmp_path):
    message = error_for(tmp_path, """\
        name: bad
        stem:
          - conv: 8
        training:
          optimizer: sgd
          learning_rat: 0.1
        """)
    assert "bad.yaml, line 6, field training.learning_rat" in message
    assert "unknown training setting 'learning_rat'" in message and "Did you mean 'learning_rate'" in message


@pytest.mark.parametrize("setting, value, expected", [
    ("momentum", "1.5", "momentum = 1.5: expected a number in [0, 1)"),
    ("batch_size", "12.5", "batch_size = 12.5: expected a positive integer"),
    ("nesterov", "yes please", "nesterov = 'yes please': expected true or false"),
    ("optimizer", "adma", "Did you mean 'adam'"),
    ("augment", "[crop, rotate]", "expected a list of crop, flip, translate"),
])
def test_training_values_are_checked_at_load_with_the_override_checker(tmp_path, setting, value, expected):
    message = error_for(tmp_path, f"name: bad\nstem:\n  - conv: 8\ntraining:\n  {setting}: {value}\n")
    assert f"bad.yaml, line 5, field training.{setting}: " in message and expected in message
    # train(training=...), --training and the tuner go through the same table and words.
    with pytest.raises(RecipeError) as info:
        training_config({}, where="overrides", **{setting: yaml.safe_load(value)})
    assert message.split(": ", 1)[1] in str(info.value)


def test_an_inherited_training_setting_is_checked_and_null_removes_it(tmp_path):
    write(tmp_path, "base.yaml", "name: base\nstem:\n  - conv: 8\ntraining: {epochs: 5, batch_size: 32}\n")
    child = write(tmp_path, "child.yaml", "name: child\nextends: base.yaml\ntraining:\n  epochs: 0\n")
    with pytest.raises(RecipeError, match=r"child\.yaml, line 4, field training\.epochs: epochs = 0"):
        load_recipe(child)
    child.write_text("name: child\nextends: base.yaml\ntraining: {batch_size: null, augment: none}\n")
    recipe = load_recipe(child)
    assert recipe.training == {"epochs": 5, "augment": []}
    assert training_config(recipe.training).batch_size == 128  # the default again


def test_every_shipped_training_section_gives_a_config():
    for name in list_recipes():
        recipe = load_recipe(name)
        config = training_config(recipe.training)
        for key, value in recipe.training.items():
            assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("entry, expected", [
    ("clases: 10", "unknown metadata key 'clases'. Known: family, params"),
    ("clases: 10", "Did you mean 'classes'"),
    ("classes: ten", "classes = 'ten': expected an integer"),
    ("classes: true", "classes = True: expected an integer"),
    ("classes: 0", "classes = 0: expected a number >= 1"),
    ("params: -5", "params = -5: expected a number >= 0"),
    ("notes: [a, b]", "notes = ['a', 'b']: expected a string"),
    ("preprocessing: imagenet", "preprocessing = 'imagenet': expected one of unit, tf, torch, "
                                "caffe, dataset"),
])
def test_metadata_keys_types_and_bounds(tmp_path, entry, expected):
    message = error_for(tmp_path, f"name: bad\nstem:\n  - conv: 8\nmetadata:\n  {entry}\n")
    key = entry.split(":")[0]
    assert f"bad.yaml, line 5, field metadata.{key}: " in message and expected in message


# ----------------------------------------------------------------------------- residual rows

ROW_HEADER = textwrap.dedent("""\
    name: rows
    metadata: {input_shape: [16, 16, 8], classes: 3}
    params: {blocks: [2, 3]}
    defaults:
      convolutional: {bottleneck: false, shortcut: pad}
      identity: {bottleneck: false}
      bottleneck: {stride_on: 1x1}
    stem:
      - conv: 8
    stages:
      - name: s1
    """)


def stage_steps(tmp_path, stage: str) -> list[tuple]:
    """(block, name, fields, shapes) of every step of the recipe whose stage s1 is `stage`."""
    path = tmp_path / "rows.yaml"
    path.write_text(ROW_HEADER + textwrap.indent(stage, "    ") + "\n")
    plan = load_recipe(path).plan()
    return [(s.block, s.name, s.fields, s.input_shape, s.output_shape) for s in plan.steps]


@pytest.mark.parametrize("row, by_hand", [
    # convolutional: the first unit strides (with the defaults' option A shortcut), then identities
    ('[convolutional, "${blocks[1]}", 16, 2]',
     ["convolutional: {filters: 16, stride: 2}", "identity: {filters: 16, repeat: 2}"]),
    # a count of 1 gives only the first unit
    ('[convolutional, "${blocks[0] - 1}", 16, 1]', ["convolutional: {filters: 16, stride: 1}"]),
    # identity: every unit keeps the shape
    ('[identity, "${blocks[0]}", 8, 1]', ["identity: {filters: 8, repeat: 2}"]),
    # bottleneck units; the fifth element gives fields to every unit; the defaults still apply
    ('[bottleneck, 3, 4, 2, {groups: 2, width: "${2 * 4}"}]',
     ["bottleneck: {filters: 4, stride: 2, groups: 2, width: 8}",
      "bottleneck: {filters: 4, groups: 2, width: 8, repeat: 2}"]),
    # v2 units with the stride on the last unit (keras.applications' ResNetV2 stack2)
    ('[convolutional, 4, 16, 2, {style: v2, stride_at: last}]',
     ["convolutional: {filters: 16, stride: 1, style: v2}",
      "identity: {filters: 16, style: v2, repeat: 2}",
      "convolutional: {filters: 16, stride: 2, style: v2, shortcut: pad}"]),
    # the mapping form
    ("{unit: convolutional, count: 2, filters: 16, stride: 2, kernel: 5}",
     ["convolutional: {filters: 16, stride: 2, kernel: 5}", "identity: {filters: 16, kernel: 5}"]),
])
def test_a_residual_row_expands_to_the_units_written_by_hand(tmp_path, row, by_hand):
    expanded = stage_steps(tmp_path, f"residual: {row}")
    written = stage_steps(tmp_path, "blocks:\n" + "\n".join(f"  - {block}" for block in by_hand))
    assert expanded == written
    units = [step for step in expanded if step[1].startswith("s1_")]
    assert [name for _, name, *_ in units] == [f"s1_block{k}" for k in range(1, len(units) + 1)]


def test_the_defaults_apply_to_the_units_of_a_row(tmp_path):
    steps = {name: (block, fields) for block, name, fields, *_ in
             stage_steps(tmp_path, "residual: [convolutional, 2, 16, 2]")}
    assert steps["s1_block1"][0] == "convolutional" and steps["s1_block1"][1]["shortcut"] == "pad"
    assert steps["s1_block2"][0] == "identity" and steps["s1_block2"][1]["shortcut"] == "identity"
    assert steps["s1_block1"][1]["bottleneck"] is False


def test_a_stage_with_a_row_and_blocks_puts_the_blocks_after_the_units(tmp_path):
    steps = stage_steps(tmp_path, "residual: [convolutional, 2, 16, 2]\nblocks:\n  - bn\n  - activation: relu")
    assert [(block, name) for block, name, *_ in steps[1:]] == [
        ("convolutional", "s1_block1"), ("identity", "s1_block2"), ("bn", "s1_bn1"), ("activation", "s1_activation1")]


@pytest.mark.parametrize("row, where, expected", [
    ('[convolutinal, 2, 16, 2]', "residual[0]", "unknown residual unit 'convolutinal'"),
    ('[convolutinal, 2, 16, 2]', "residual[0]", "Did you mean 'convolutional'"),
    ('[convolutional, "${blocks[0] - 2}", 16, 2]', "residual[1]",
     "residual row count = 0 (from '${blocks[0] - 2}' with blocks=[2, 3]): expected integer >= 1"),
    ("[convolutional, 2, 16, 0]", "residual[3]", "residual row stride = 0: expected integer >= 1"),
    ("[convolutional, 2, sixteen, 2]", "residual[2]", "convolutional.filters = 'sixteen': expected integer"),
    ("[convolutional, 2, 16, 2, {grups: 2}]", "residual[4].grups", "Did you mean 'groups'"),
    ("[convolutional, 2, 16, 2, {stride: 1}]", "residual[4].stride", "'stride' is the row's element 4"),
    ("[convolutional, 2, 16, 2, {name: x}]", "residual[4].name", "names and counts its units itself"),
    ("[identity, 2, 8, 2]", "residual[3]", "an identity row has stride 1, got stride = 2"),
    ("[identity, 2, 16, 1]", "residual", "an identity unit must keep the shape"),
    ("[bottleneck, 2, 4, 2, {stride_at: last}]", "residual[4].stride_at", "stride_at: last is for convolutional rows"),
    ("[convolutional, 1, 16, 2, {stride_at: last}]", "residual[1]", "stride_at: last needs count >= 2"),
    ("[convolutional, 2, 16]", "residual", "a residual row is [unit, count, filters, stride]"),
    ("{unit: identity, count: 2}", "residual", "filters, stride missing"),
    ("{unit: identity, count: 2, filters: 8, stride: 1, kernal: 3}", "residual.kernal", "Did you mean 'kernel'"),
])
def test_residual_row_errors_name_file_line_and_element(tmp_path, row, where, expected):
    with pytest.raises(RecipeError) as info:
        stage_steps(tmp_path, f"residual: {row}")
    message = str(info.value)
    line = ROW_HEADER.count("\n") + 1
    assert f"rows.yaml, line {line}, field stages[0].{where}: " in message
    assert expected in message


def test_unknown_stage_key_suggests_residual(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown stage key 'residul'.*Did you mean 'residual'"):
        stage_steps(tmp_path, "residul: [identity, 2, 8, 1]")


# ----------------------------------------------------------------------------- declared params


def test_a_child_value_is_reported_at_the_child_line_not_the_parents_layer(tmp_path):
    child = write(tmp_path, "child.yaml", "name: child\nextends: densenet121\nparams:\n  growth_rate: -4\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(child)
    message = str(info.value)
    assert message.startswith(f"{child}, line 4, field params.growth_rate: param growth_rate = -4: ")
    assert "expected an integer from 1 to 1024 (declared at " in message and "densenet121.yaml" in message


@pytest.mark.parametrize("overrides, source, needle", [
    ({"growth_rate": 0}, None, "keyword argument growth_rate=0: param growth_rate = 0: expected an integer"),
    ({"growth_rate": 0}, "--set", "--set growth_rate=0: param growth_rate = 0: expected an integer"),
    ({"blocks": [3, 4, -1, 3]}, "--set", "--set blocks=[3, 4, -1, 3]: param blocks = [3, 4, -1, 3]: item 2 = -1"),
    ({"blocks": [3, 4]}, "--set", "--set blocks=[3, 4]: param blocks = [3, 4]: expected a list of 4 items, "
                                  "each an integer from 1 to 1000"),
    ({"compression": 0.0}, None, "keyword argument compression=0.0: param compression = 0.0: expected a number"),
])
def test_an_override_is_checked_against_the_declaration_and_named(overrides, source, needle):
    from cnnbuilder.recipe.params import overrides_from

    with overrides_from(source) if source else contextlib.nullcontext():
        with pytest.raises(RecipeError) as info:
            load_recipe("densenet121").plan(**overrides)
    assert str(info.value).startswith(needle)


def test_a_rule_over_several_params_is_reported_where_the_value_was_set(tmp_path):
    child = write(tmp_path, "deep.yaml", "name: deep\nextends: densenet_bc100_k12\nparams:\n  depth: 41\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(child)
    message = str(info.value)
    assert message.startswith(f"{child}, line 4, field params.depth: param depth = 41: depth - 4 must be")
    assert "(with bottleneck=True)" in message
    # The rule follows the other param: without the bottleneck, 3n + 4 depths are accepted.
    assert load_recipe("densenet_bc100_k12").plan(depth=40, bottleneck=False).params["layers"] == 12


def test_a_derived_field_names_where_its_params_were_set(tmp_path):
    base = write(tmp_path, "base.yaml", TINY_RECIPE)
    child = write(tmp_path, "child.yaml", "name: child\nextends: base.yaml\nparams:\n  width: 0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(child)
    message = str(info.value)
    # First where the user set the value, then the derived field in the parent.
    assert message.startswith(f"{child}, line 4, field params.width (width=0) gives, at {base}, line 10, "
                              "field stem[0].conv.filters: conv.filters = 0")
    from cnnbuilder.recipe.params import overrides_from

    with overrides_from("--set"), pytest.raises(RecipeError, match=r"^--set width=0 gives, at "):
        load_recipe(base).plan(width=0)
    with pytest.raises(RecipeError, match=r"^keyword argument units=\[1, 0\] gives, at .*repeat"):
        load_recipe(base).plan(units=[1, 0])


def test_a_child_value_keeps_the_parents_declaration_and_a_child_declaration_merges(tmp_path):
    write(tmp_path, "base.yaml", TINY_RECIPE.replace("  width: 8", "  width: {default: 8, int: [1, 64]}"))
    plain = write(tmp_path, "plain.yaml", "name: plain\nextends: base.yaml\nparams: {width: 16}\n")
    assert load_recipe(plain).params["width"] == 16
    with pytest.raises(RecipeError, match="expected an integer from 1 to 64"):
        load_recipe(plain).plan(width=65)
    wider = write(tmp_path, "wider.yaml", "name: wider\nextends: base.yaml\nparams:\n  width: {int: [1, 128]}\n")
    assert load_recipe(wider).plan(width=100).params["width"] == 100
    assert load_recipe(wider).params["width"] == 8  # the default is inherited
    free = write(tmp_path, "free.yaml", "name: free\nextends: base.yaml\nparams:\n  width: {int: null}\n")
    assert load_recipe(free).plan(width=1000).params["width"] == 1000


@pytest.mark.parametrize("declaration, line, expected", [
    ("{default: 8, int: [1]}", 5, "expected [low, high] of integers"),
    ("{default: 8, int: [9, 1]}", 5, "expected low <= high"),
    ("{default: 8, range: [1, 9]}", 5, "'range' is not one of default, int"),
    ("{default: 8, message: hi}", 5, "a message explains a rule"),
    ("{default: 8, rule: width > 1}", 5, "expected a \"${...}\" expression"),
    ("{default: 8, choice: []}", 5, "expected a non-empty list"),
    ("{default: 8, length: -1}", 5, "expected a count n or [low, high]"),
    ("{default: 8, int: [10, 20]}", 5, "param width = 8: expected an integer from 10 to 20"),
    ("{default: 8, rule: \"${width % 3 == 0}\", message: width is a multiple of 3}", 5,
     "param width = 8: width is a multiple of 3"),
])
def test_bad_declarations_name_file_and_line(tmp_path, declaration, line, expected):
    path = write(tmp_path, "declared.yaml", TINY_RECIPE.replace("  width: 8", f"  width: {declaration}"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"declared.yaml, line {line}, field params.width" in str(info.value)
    assert expected in str(info.value)


def test_a_param_declared_without_any_default_is_an_error(tmp_path):
    path = write(tmp_path, "nodefault.yaml", TINY_RECIPE.replace("  width: 8", "  width: {int: [1, 9]}"))
    with pytest.raises(RecipeError, match=r"nodefault.yaml, line 5, field params.width: param 'width' "
                                          r"is declared without a default"):
        load_recipe(path)


def test_the_cyclic_extends_message_starts_from_the_file_asked_for(tmp_path):
    a = write(tmp_path, "cycle_a.yaml", "name: a\nextends: cycle_b.yaml\n")
    b = write(tmp_path, "cycle_b.yaml", "name: b\nextends: cycle_a.yaml\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(a)
    assert str(info.value) == (f"{a}: cyclic extends: cycle_a -> cycle_b -> cycle_a: {a} (line 2) extends "
                               f"{b}; {b} (line 2) extends {a}.")
