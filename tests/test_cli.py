"""`cnnbuilder list` and `cnnbuilder show`: what they print, the diagram, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import cnnbuilder
from cnnbuilder.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> dict[str, list[str]]:
    """The body rows of a `show` table: first cell → cells."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def number(text: str) -> int:
    return int(text.replace(",", ""))


def assert_one_paragraph_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    text = err.strip()
    assert any(text.startswith(f"cnnbuilder {command}: error:")
               for command in ("show", "list", "train")), err
    assert "\n\n" not in text and len(text.splitlines()) <= 2, err
    for needle in needles:
        assert needle in text, err


# ----------------------------------------------------------------------------- list


def test_list_prints_every_recipe_on_one_line(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    header, body = lines[0].split(), lines[1:]
    assert header == ["recipe", "family", "params", "input", "reference"]
    names = cnnbuilder.list_recipes()
    assert [line.split()[0] for line in body] == names  # one line each, sorted
    rows = {line.split()[0]: line for line in body}
    resnet20 = rows["resnet20"].split()
    assert resnet20[1:4] == ["resnet_cifar", "271.10K", "32×32×3"]
    assert "He et al. 2016, Table 6" in rows["resnet20"]
    assert "138.36M" in rows["vgg16"] and "224×224×3" in rows["vgg16"]
    assert "Simonyan & Zisserman 2015" in rows["vgg16"]
    assert "61.71K" in rows["lenet5"] and "32×32×1" in rows["lenet5"]
    for name in names:
        recipe = cnnbuilder.load_recipe(name)
        assert recipe.family in rows[name].split()


def test_list_pattern(capsys):
    code, out, _ = run(capsys, "list", "densenet_bc*")
    assert code == 0
    body = out.rstrip("\n").splitlines()[1:]
    assert [line.split()[0] for line in body] == ["densenet_bc100_k12", "densenet_bc190_k40", "densenet_bc250_k24"]


def test_list_without_a_match_is_an_error(capsys):
    code, out, err = run(capsys, "list", "nosuch*")
    assert out == ""
    assert_one_paragraph_error(code, err, "'nosuch*'", "cnnbuilder list")


# ----------------------------------------------------------------------------- show


def test_show_resnet20_has_a_row_per_stage_and_totals(capsys):
    code, out, _ = run(capsys, "show", "resnet20")
    assert code == 0
    rows = table_rows(out)
    assert list(rows) == ["stem", "stage1", "stage2", "stage3", "head", "total"]
    assert rows["stage1"][1:3] == ["identity ×3", "32×32×16"]
    assert rows["stage2"][1:3] == ["convolutional, identity ×2", "16×16×32"]
    assert rows["stage3"][1:3] == ["convolutional, identity ×2", "8×8×64"]
    assert rows["head"][2] == "10"
    # Totals equal the built model's and the sum of the stages'.
    model = cnnbuilder.build("resnet20")
    total = number(rows["total"][3])
    assert total == model.count_params() == 271_098
    assert sum(number(rows[s][3]) for s in ("stem", "stage1", "stage2", "stage3", "head")) == total
    assert rows["stage1"][3] == "14,208"
    assert rows["total"][4] == "40.55M"  # multiply-adds of He et al.'s ResNet-20 (41M)
    assert "trainable 269,722" in out


def test_show_options_change_the_network(capsys):
    code, out, _ = run(capsys, "show", "resnet20", "--set", "depth=32", "--input-shape", "16,16,1",
                       "--classes", "4")
    assert code == 0
    rows = table_rows(out)
    assert rows["stage1"][1:3] == ["identity ×5", "16×16×16"]  # n = (32 - 2) / 6 units
    assert rows["stage3"][2] == "4×4×64"
    assert rows["head"][2] == "4"
    # resnet32 has 466,426 parameters; one input channel saves 2·144, four classes 6·65.
    assert number(rows["total"][3]) == 466_426 - 2 * 144 - 6 * 65


def test_show_dense_blocks_name_their_layers(capsys):
    code, out, _ = run(capsys, "show", "densenet40_k12", "--set", "depth=16")
    assert code == 0
    rows = table_rows(out)
    assert rows["conv2"][1] == "dense (4 layers), transition"
    assert rows["conv4"][2] == "8×8×160"  # 16 + 3 blocks × 4 layers × k=12 (θ = 1)


def test_show_plot_writes_a_png(capsys, tmp_path):
    target = tmp_path / "plots" / "resnet20.png"
    code, out, _ = run(capsys, "show", "resnet20", "--plot", str(target))
    assert code == 0
    assert str(target) in out
    data = target.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(target) as image:
        image.verify()
    with Image.open(target) as image:
        width, height = image.size
        assert width >= 800 and 300 <= height < width
        # Not a blank canvas: the boxes are coloured.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["show", "resnet_20"], ["unknown recipe 'resnet_20'", "cnnbuilder list"]),
        (["show", "resnet20", "--set", "depth"], ["NAME=VALUE", "'depth'"]),
        (["show", "resnet20", "--set", "depth=[1"], ["--set depth"]),
        (["show", "resnet20", "--set", "growth_rate=12"], ["unknown param 'growth_rate'", "resnet20.yaml"]),
        (["show", "resnet20", "--set", "depth=21"], ["6n+2", "depth=21"]),
        (["show", "resnet20", "--input-shape", "32x32x3"], ["--input-shape", "'32x32x3'"]),
        (["show", "resnet20", "--input-shape", "32,32"], ["HEIGHT,WIDTH,CHANNELS"]),
        (["show", "resnet50", "--input-shape", "16,16,3"], ["at least 32x32"]),
        (["show", "resnet20", "--plot", "diagram.txt"], [".txt", ".png"]),
        (["train", "resnet20", "--output", "run", "--coordinator", "127.0.0.1:1234",
          "--num-processes", "2", "--process-id", "0"], ["--backend jax", "MultiWorkerMirroredStrategy"]),
        (["train", "resnet20", "--output", "run", "--coordinator", "host0", "--num-processes", "2",
          "--process-id", "0"], ["--coordinator must be HOST:PORT", "'host0'"]),
        (["train", "resnet20", "--output", "run", "--coordinator", "host0:1234",
          "--num-processes", "2", "--process-id", "2"], ["--process-id is 2", "0 to 1"]),
        (["train", "resnet20", "--output", "run", "--num-processes", "2"],
         ["missing: --coordinator, --process-id", "KERAS_DISTRIBUTION_JOB_ADDRESSES"]),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_code_2(capsys, argv, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert_one_paragraph_error(code, err, *needles)
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_argument_type_exits_2_in_one_paragraph_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["show", "resnet20", "--classes", "0"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --classes: expected an integer from 1 to 2,147,483,647" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- console script


def console_script() -> str:
    candidate = Path(sys.executable).parent / "cnnbuilder"
    found = str(candidate) if candidate.exists() else shutil.which("cnnbuilder")
    if not found:
        pytest.fail("the cnnbuilder console script is not installed (pip install -e .)")
    return found


def test_console_script(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run([console_script(), "list", "resnet5*"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["resnet50", "resnet50_tv", "resnet50v2", "resnet56"]

    failed = subprocess.run([console_script(), "show", "nosuch"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert failed.returncode == 2
    assert failed.stdout == ""
    # TensorFlow's start-up lines are silenced: stderr is the one message.
    assert failed.stderr.strip().startswith("cnnbuilder show: error: unknown recipe 'nosuch'"), failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_diagram_labels_and_connections_follow_the_plan():
    """What the diagram draws for a stage, read from the plan (no model needed)."""
    from cnnbuilder.plots.architecture import segment_label, segments_of, shortcut_kind

    def stage(name, stage_name):
        return segments_of([s for s in cnnbuilder.load_recipe(name).default_plan.steps if s.stage == stage_name])

    resnet = stage("resnet20", "stage2")
    assert [segment_label(s) for s in resnet] == ["convolutional/2", "identity ×2"]
    assert [shortcut_kind(step) for seg in resnet for step in seg.steps] == ["pad", "identity", "identity"]
    plain = stage("plain20", "stage2")
    assert [shortcut_kind(step) for seg in plain for step in seg.steps] == [None, None, None]
    assert segment_label(plain[1]) == "identity ×2 (no shortcut)"
    assert [segment_label(s) for s in stage("densenet121", "conv4")] == ["dense ×24 (k=32)", "transition θ=0.5"]
    assert [segment_label(s) for s in stage("resnext50_32x4d", "conv3")] == ["bottleneck ×4, first /2 (g=32)"]
    assert [shortcut_kind(step) for step in stage("resnext50_32x4d", "conv3")[0].steps] == [
        "projection", "identity", "identity", "identity"]
    assert [segment_label(s) for s in stage("googlenet", "inception4")] == ["max pool 3×3/2", "inception ×5"]


# ----------------------------------------------------------------------------- failures


def test_an_internal_failure_is_one_paragraph_exit_1_with_a_debug_hint(capsys, monkeypatch):
    import cnnbuilder.cli as cli

    def broken(args):
        raise ValueError("a Keras shape mismatch\nspread over lines")

    monkeypatch.setattr(cli, "cmd_list", broken)
    code, out, err = run(capsys, "list")
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith("cnnbuilder list: internal error: ValueError: a Keras shape mismatch spread over lines")
    assert "--debug" in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback_of_any_failure(monkeypatch):
    import cnnbuilder.cli as cli

    def broken(args):
        raise ValueError("boom")

    monkeypatch.setattr(cli, "cmd_list", broken)
    for argv in (["--debug", "list"], ["list", "--debug"]):
        with pytest.raises(ValueError, match="boom"):
            main(argv)
    with pytest.raises(cnnbuilder.RecipeError):  # a user's error too, with --debug
        main(["show", "no_such_recipe", "--debug"])


def test_what_the_system_refuses_is_bad_input_exit_2(capsys, monkeypatch):
    import cnnbuilder.cli as cli

    def refused(args):
        raise PermissionError(13, "Permission denied", "/root/runs/r20/metrics.json")

    monkeypatch.setattr(cli, "cmd_list", refused)
    code, _, err = run(capsys, "list")
    assert code == 2
    assert err.strip() == "cnnbuilder list: error: Permission denied: /root/runs/r20/metrics.json"


def test_a_bad_set_value_is_reported_where_the_user_wrote_it(capsys):
    code, _, err = run(capsys, "show", "densenet121", "--set", "growth_rate=0")
    assert_one_paragraph_error(code, err, "--set growth_rate=0")
    assert "stem" not in err  # not the derived layer size it would have broken


def test_show_training_names_the_preprocessing_a_run_from_scratch_uses(capsys):
    import json

    for recipe, expected in (("resnet20", "dataset"), ("resnet50", "unit")):
        code, out, _ = run(capsys, "show", recipe, "--training", "--json")
        assert code == 0
        assert json.loads(out)["preprocessing"] == expected, recipe
