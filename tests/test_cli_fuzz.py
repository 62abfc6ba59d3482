"""Random argument lists to every command end with exit status 0, 1 or 2, and never print a
traceback (DESIGN.md §5). Run in-process through `cnnbuilder.cli.main`; argparse's own
refusals (SystemExit 2) count.

Cheap by construction: `train` and `tune` always end with a dataset folder that does not
exist (the last `--dataset` wins), `export` and `predict` get paths that are no run and no
model, and `show` gets small recipes and input shapes, so no example trains or builds a
large network. `--debug` is never drawn: it is documented to show tracebacks.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbuilder.cli import main
from helpers import TINY_RECIPE

WORDS = ["", "-", "--", "=", "x=1", "a=b=c", "0", "-1", "1e999", "nan", "[1", "{a: 1}", "💥", "\x00",
         "none,none,3", "1,1,1", "8,8,3", "32x32", "lenet5", "tiny*", "resnet*", "*", "[", "tfds:", "folder:",
         "width=0", "width=-4", "width=[1]", "units=[1, 0]", "units=[9, 99999]", "width=${10 ** 10}",
         "width=&a", "growth_rate=12", "learning_rate=0", "epochs=-1", "optimizer=nope", "out.png",
         "out.txt", "int8", "onnx", "savedmodel", "--help"]
OPTIONS = {
    "list": [],
    "show": ["--input-shape", "--classes", "--set", "--training", "--json", "--plot", "--dataset"],
    "train": ["--epochs", "--batch-size", "--set", "--input-shape", "--seed", "--quiet", "--overwrite",
              "--training", "--learning-rate", "--optimizer", "--schedule", "--weight-decay", "--augment",
              "--data-dir", "--no-tensorboard"],
    "tune": ["--tuner", "--max-trials", "--epochs", "--objective", "--max-params", "--batch-size", "--set",
             "--input-shape", "--seed", "--retrain-epochs", "--trial-timeout", "--quiet", "--overwrite"],
    "export": ["--format", "--quantize", "--max-accuracy-drop", "--force", "--class-names", "--data-dir"],
    "predict": ["--top-k", "--json"],
}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a small valid recipe, a broken one, a fake model and a fake image."""
    root = tmp_path_factory.mktemp("cli_fuzz")
    (root / "tiny.yaml").write_text(TINY_RECIPE)
    (root / "broken.yaml").write_text("name: broken\nstem: [&a x, *a]\n")
    (root / "model.keras").write_bytes(b"not a zip")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "run").mkdir()
    return root


@st.composite
def argument_lists(draw, root):
    command = draw(st.sampled_from(list(OPTIONS)))
    paths = [str(root / name) for name in ("tiny.yaml", "broken.yaml", "missing.yaml", "run", "model.keras",
                                           "image.png", "nowhere")]
    word = st.one_of(st.sampled_from(WORDS + paths), st.text(max_size=8))
    argv = [command]
    if command in ("show", "train", "tune"):
        argv.append(draw(st.sampled_from([paths[0], paths[1], paths[2], "lenet5", "no_such_recipe", "x.yaml"])))
    elif command == "export":
        argv.append(draw(st.sampled_from(paths[3:])))
    elif command == "predict":
        argv += [draw(st.sampled_from(paths[3:])), draw(st.sampled_from(paths[4:]))]
    elif draw(st.booleans()):
        argv.append(draw(word))
    for _ in range(draw(st.integers(0, 4))):
        if OPTIONS[command] and draw(st.booleans()):
            argv.append(draw(st.sampled_from(OPTIONS[command])))
        argv.append(draw(word))
    if command in ("train", "tune", "export"):
        argv += ["--output", str(root / "out" / draw(st.sampled_from(["a", "b"])))]
    if command in ("train", "tune"):
        argv += ["--dataset", f"folder:{root / 'no_such_folder'}"]  # last: nothing ever trains
    if command == "show" and "--input-shape" not in argv:
        argv += ["--input-shape", "16,16,3"]
    return argv


def run(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue() + err.getvalue()


def test_the_fuzzed_commands_fail_cleanly_on_known_bad_input(place):
    code, text = run(["show", str(place / "broken.yaml")])
    assert code == 2 and "anchors and aliases" in text and "Traceback" not in text
    code, text = run(["train", str(place / "tiny.yaml"), "--output", str(place / "out" / "c"),
                      "--dataset", f"folder:{place / 'no_such_folder'}"])
    assert code == 2 and "no_such_folder" in text and "Traceback" not in text


def test_random_argument_lists_end_in_0_1_or_2_without_a_traceback(place):
    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(argument_lists(place))
    def check(argv):
        code, text = run(argv)
        assert code in (0, 1, 2), (argv, code, text[-2000:])
        assert "Traceback (most recent call last)" not in text, (argv, text[-2000:])

    check()
