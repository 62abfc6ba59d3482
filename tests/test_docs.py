"""`docs/recipes.md` cannot drift from the recipe language: its tables are regenerated from
the block registry and compared, and its YAML examples are loaded (and one built)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cnnbuilder
from tools import docgen as docs
from cnnbuilder.recipe.document import TOP_LEVEL_KEYS
from cnnbuilder.recipe.expressions import FUNCTIONS
from cnnbuilder.recipe.vocabulary import BLOCKS, COMMON_FIELDS
from cnnbuilder.recipe.training import TrainingConfig

# Everything here but the one test that builds a model is in the fast tier (no TensorFlow).
FAST = pytest.mark.fast
DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
TEXT = DOC.read_text(encoding="utf-8")
FENCE = re.compile(r"(?:<!-- expect-error: (?P<error>.*?) -->\n)?```yaml\n(?P<body>.*?)```", re.DOTALL)
RECIPE_KEYS = ("stem", "stages", "head", "extends")


def yaml_examples() -> list[tuple[str, str | None]]:
    return [(m.group("body"), m.group("error")) for m in FENCE.finditer(TEXT)]


def recipe_examples() -> list[tuple[str, str | None]]:
    return [(body, error) for body, error in yaml_examples()
            if any(key in (yaml.safe_load(body) or {}) for key in RECIPE_KEYS)]


def block_section(name: str) -> str:
    start = TEXT.index(f"#### `{name}`\n")
    following = TEXT.find("\n#### ", start + 1)
    heading = TEXT.find("\n### ", start + 1)
    ends = [e for e in (following, heading) if e != -1]
    return TEXT[start:min(ends) if ends else len(TEXT)]


@FAST
def test_generated_sections_equal_what_the_registry_renders():
    assert docs.stale_sections(TEXT) == [], "run `python -m tools.docgen` to regenerate"
    assert set(docs.sections_in(TEXT)) == set(docs.SECTIONS)


@FAST
@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_block_and_field_is_documented(name):
    section = block_section(name)
    spec = BLOCKS[name]
    assert spec.doc in section
    rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")}
    assert rows == {f"`{f.name}`" for f in spec.fields}
    for field in spec.fields:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{field.name}` |"))
        assert field.describe_type().replace("|", "\\|") in row
        assert ("required" if field.required else docs._code(field.default)) in row
        assert field.doc.replace("|", "\\|") in row
    assert f"[`{name}`](#{name})" in TEXT  # in the summary table


@FAST
def test_common_fields_top_level_keys_functions_and_training_settings_are_documented():
    for field in COMMON_FIELDS:
        assert f"| `{field.name}` | {field.describe_type()} |" in TEXT
    for key in TOP_LEVEL_KEYS:
        assert f"| `{key}` |" in TEXT
    for function in FUNCTIONS:
        assert f"| `{function}` |" in TEXT
    for setting in TrainingConfig().to_dict():
        assert f"| `{setting}` |" in TEXT


@FAST
def test_generator_refuses_an_undocumented_key(monkeypatch):
    monkeypatch.setattr(docs, "TOP_LEVEL_DOCS", {k: v for k, v in docs.TOP_LEVEL_DOCS.items() if k != "tune"})
    with pytest.raises(RuntimeError, match="undocumented: \\['tune'\\]"):
        docs.render_top_level()


@FAST
def test_a_changed_block_makes_the_document_stale(monkeypatch):
    spec = BLOCKS["dropout"]
    changed = type(spec)(spec.name, spec.family, spec.doc + " Changed.", spec.fields, spec.shape,
                         spec.shorthand, spec.composite)
    monkeypatch.setitem(BLOCKS, "dropout", changed)
    assert docs.stale_sections(TEXT) == ["blocks"]
    assert docs.stale_sections(docs.update(TEXT)) == []


@FAST
def test_check_command_and_update_in_place(tmp_path):
    path = tmp_path / "recipes.md"
    path.write_text(TEXT.replace("| `growth_rate` | integer >= 1 |", "| `growth_rate` | string |"))
    assert docs.main([str(path), "--check"]) == 1
    assert docs.main([str(path)]) == 0
    assert path.read_text() == TEXT
    assert docs.main([str(path), "--check"]) == 0


@FAST
def test_yaml_examples_are_valid_yaml_and_there_are_recipes_among_them():
    examples = yaml_examples()
    assert len(examples) >= 8
    for body, _ in examples:
        assert isinstance(yaml.safe_load(body), dict)
    assert len(recipe_examples()) >= 4


@FAST
@pytest.mark.parametrize("index", range(len(recipe_examples())))
def test_recipe_examples_load_or_fail_as_documented(index, tmp_path):
    body, error = recipe_examples()[index]
    name = yaml.safe_load(body).get("name", f"example{index}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    if error is None:
        recipe = cnnbuilder.load_recipe(str(path))
        assert recipe.default_plan.steps
    else:
        with pytest.raises(cnnbuilder.RecipeError) as info:
            cnnbuilder.load_recipe(str(path))
        assert error in str(info.value)


@FAST
def test_documented_claims_about_params_and_errors(tmp_path):
    by_name = {yaml.safe_load(body).get("name"): body for body, _ in recipe_examples()}
    path = tmp_path / "tiny_densenet.yaml"
    path.write_text(by_name["tiny_densenet"])
    # "stem_channels is 48 with growth_rate=24"
    assert cnnbuilder.load_recipe(str(path)).plan(growth_rate=24).params["stem_channels"] == 48
    with pytest.raises(cnnbuilder.RecipeError, match=r"field params\.n: .*\(got depth=21\)"):
        cnnbuilder.load_recipe("resnet20").plan(depth=21)
    with pytest.raises(cnnbuilder.RecipeError, match=re.escape(
            "conv.filters = 0 (from '${2 * width}' with width=0): expected integer >= 1.")):
        cnnbuilder.load_recipe({"name": "x", "params": {"width": 0},
                                "stem": [{"conv": {"filters": "${2 * width}"}}]})


def test_the_first_example_builds(tmp_path):  # builds with Keras: the default tier
    body, _ = recipe_examples()[0]
    path = tmp_path / "tiny_resnet.yaml"
    path.write_text(body)
    model = cnnbuilder.build(str(path))
    assert model.name == "tiny_resnet"
    assert model.output_shape == (None, 10)
    assert "stage2_block1_1_conv" in [layer.name for layer in model.layers]
    deeper = cnnbuilder.build(str(path), depth=20, width=8)
    assert deeper.count_params() < model.count_params()


@FAST
def test_the_residual_row_example_is_the_recipe_written_by_hand(tmp_path):
    by_name = {yaml.safe_load(body).get("name"): body for body, _ in recipe_examples()}

    def steps(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(by_name[name])
        plan = cnnbuilder.load_recipe(str(path)).plan()
        return [(s.block, s.name, s.fields, s.output_shape) for s in plan.steps]

    assert steps("row_example") == steps("row_example_by_hand")
    assert [name for _, name, *_ in steps("row_example")][-4:] == [f"conv3_block{k}" for k in range(1, 5)]
    with pytest.raises(cnnbuilder.RecipeError, match=re.escape(
            "field stages[1].residual[1]: residual row count = 0 (from '${blocks[1]}' with "
            "blocks=[2, 0, 2, 2]): expected integer >= 1.")):
        cnnbuilder.load_recipe("resnet18").plan(blocks=[2, 0, 2, 2])


@FAST
def test_docs_module_does_not_import_tensorflow():
    code = "import sys, tools.docgen; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
