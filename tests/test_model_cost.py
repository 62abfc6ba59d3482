"""Issue 23: a model's cost (parameters, activations, multiply-adds) known from a skeleton
before any weight is allocated; build refuses a model over the bound, naming the recipe
line and the argument that made it so; `show` prints the cost of any model."""

from __future__ import annotations

import textwrap

import keras
import pytest

import cnnbuilder
from cnnbuilder.cli import main
from cnnbuilder.errors import RecipeError
from cnnbuilder.model import cost as costs

HUGE = """\
    name: huge
    metadata: {input_shape: [32, 32, 1], classes: 10}
    stem:
      - conv: 6
      - pool: max
    head:
      - flatten
      - fc: 1000000000
      - fc: ${classes}
    """


def huge_recipe(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(textwrap.dedent(HUGE))
    return path


def pending_variables() -> int:
    from keras.src.backend.common import global_state

    return len(global_state.get_global_attribute("uninitialized_variables") or [])


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "densenet_bc100_k12"])
def test_the_skeleton_counts_what_the_built_model_has(name):
    model = cnnbuilder.build(name)
    recipe = cnnbuilder.load_recipe(name)
    with costs.skeleton_scope():
        skeleton = cnnbuilder.build(name)
    try:
        cost = costs.model_cost(skeleton, recipe.plan())
        assert all(v._value is None for v in skeleton.weights)  # nothing allocated
    finally:
        costs.discard_skeleton()
    assert pending_variables() == 0
    assert cost.params == model.count_params()
    assert cost.macs == costs.model_cost(model).macs > 0
    assert cost.activations == sum(
        int(keras.ops.prod(layer.output.shape[1:])) for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer))


def test_a_model_over_the_parameter_bound_is_refused_at_its_recipe_line(tmp_path):
    path = huge_recipe(tmp_path)
    with pytest.raises(RecipeError) as caught:
        cnnbuilder.build(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 8, field head[1].fc")
    assert "1,547,000,000,070 parameters" in message and "CNNBUILDER_MAX_PARAMS" in message
    assert pending_variables() == 0  # the refused skeleton is gone, never initialised


def test_classes_that_make_the_model_too_large_are_named(capsys):
    with pytest.raises(RecipeError, match=r"^classes=100000000 gives, at .*lenet5\.yaml, line \d+"):
        cnnbuilder.build("lenet5", classes=100_000_000)
    code = main(["show", "lenet5", "--classes", "100000000"])
    out = capsys.readouterr().out
    assert code == 0
    assert "8,500,060,856" in out
    assert "over the bound" in " ".join(out.split()) and "--classes 100000000 gives" in " ".join(out.split())


def test_the_bound_is_a_documented_setting(monkeypatch):
    monkeypatch.setenv("CNNBUILDER_MAX_PARAMS", "50000")
    with pytest.raises(RecipeError, match="over the bound of 50,000"):
        cnnbuilder.build("lenet5")
    monkeypatch.setenv("CNNBUILDER_MAX_PARAMS", "none")
    monkeypatch.setenv("CNNBUILDER_MAX_MEMORY", "1000")
    with pytest.raises(RecipeError, match="CNNBUILDER_MAX_MEMORY"):
        cnnbuilder.build("lenet5")
    monkeypatch.setenv("CNNBUILDER_MAX_MEMORY", "none")
    assert cnnbuilder.build("lenet5").count_params() == 61_706


def test_show_prints_the_cost_of_a_model_it_could_never_allocate(tmp_path, capsys):
    code = main(["show", str(huge_recipe(tmp_path))])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "params 1,547,000,000,070" in out and "activations" in out
    assert "over the bound" in out
    assert pending_variables() == 0


@pytest.mark.parametrize("argv, needle", [
    (["show", "lenet5", "--input-shape", "8,8,1"], "--input-shape 8,8,1: the input is too small"),
    (["show", "lenet5", "--input-shape", "4294967297,32,1"], "--input-shape expects"),
    (["show", "lenet5", "--input-shape", "99999999999999999999,32,1"], "--input-shape expects"),
    (["show", "lenet5", "--classes", "1000000000000"], "argument --classes"),
    (["train", "lenet5", "--seed=-1", "--output", "x"], "argument --seed"),
    (["train", "lenet5", "--learning-rate", "inf", "--output", "x"], "argument --learning-rate"),
    (["train", "lenet5", "--weight-decay", "nan", "--output", "x"], "argument --weight-decay"),
    (["tune", "lenet5", "--seed", "4294967296", "--output", "x"], "argument --seed"),
    (["tune", "resnet20", "--trial-timeout", "inf", "--output", "x"], "argument --trial-timeout"),
    (["train", "lenet5", "--augment", "none,crop", "--output", "x"], "write none alone"),
    (["train", "lenet5", "--input-shape", "8,8,1", "--output", "x"], "--input-shape 8,8,1: the input is too small"),
    (["show", "lenet5", "--set", "activation=${1/0}"], "--set activation='${1/0}': bad expression"),
    (["export", "nowhere", "--output", "x/1", "--max-accuracy-drop", "nan"], "argument --max-accuracy-drop"),
    (["predict", "nowhere", "a.png", "--top-k", "0"], "argument --top-k"),
    (["help", "nothing"], "no topic 'nothing'"),
])
def test_bad_flags_exit_2_in_one_paragraph_naming_the_flag(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "x").exists()


def test_a_bogus_keras_backend_is_named_before_keras_is_imported(capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "bogus")
    code = main(["show", "lenet5"])
    err = capsys.readouterr().err
    assert code == 2 and "KERAS_BACKEND='bogus'" in err


def test_output_to_a_file_or_pipe_holds_no_escape_sequences(capsys):
    for argv in (["list", "lenet*"], ["show", "lenet5"], ["show", "lenet5", "--training"]):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert "\x1b" not in out and "\x1b" not in err, argv


@pytest.mark.parametrize("setting, needle", [("learning_rate=.inf", "learning_rate = inf"),
                                             ("bogus=1", "unknown training setting 'bogus'")])
def test_training_flag_values_are_blamed_on_the_flag(capsys, tmp_path, setting, needle):
    code = main(["train", "lenet5", "--training", setting, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cnnbuilder train: error: --training: ") and needle in err
    assert not (tmp_path / "r").exists()
