"""Recipes are untrusted input: every cost of reading and planning one is bounded.

Each bad input must end in a `RecipeError` that names the file (and the line where there is
one), never in a hang or a memory blow-up: every load runs under an alarm, so a bound that
stops working fails its test instead of hanging the suite. Pure Python (the fast tier).
"""

from __future__ import annotations

import contextlib
import signal
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbuilder import RecipeError, load_recipe
from cnnbuilder.recipe.expressions import ExpressionError, evaluate
from helpers import TINY_RECIPE

pytestmark = pytest.mark.fast

SECONDS = 10  # far more than any bounded load takes, far less than an unbounded one


class Hang(Exception):
    """A load ran past its alarm: a bound is missing."""


@contextlib.contextmanager
def alarm(seconds: int = SECONDS):
    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(path, **plan) -> str:
    """The message of the RecipeError that loading (and planning) `path` ends in."""
    with alarm(), pytest.raises(RecipeError) as info:
        recipe = load_recipe(path)
        if plan:
            recipe.plan(**plan)
    return str(info.value)


def write_bytes(tmp_path: Path, data: bytes, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tiny_with(**changes) -> str:
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe.update(changes)
    return yaml.safe_dump(recipe, sort_keys=False)


# ----------------------------------------------------------------------------- the file

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(24))

# (name, file content, what the message says, the line it names or None)
BAD_FILES = [
    ("alias bomb of 25 lines", LAUGHS, "anchors and aliases", 1),
    ("one alias", "name: x\nwidth: &w 8\nother: *w\n", "anchors and aliases", 2),
    ("merge key", "base: &b {a: 1}\nname: x\nstem:\n  <<: *b\n", "anchors and aliases", 1),
    ("deep flow nesting", "name: x\nstem: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than", 2),
    ("deep block nesting", "name: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(60)) + " " * 60 + "v\n",
     "nested more than", None),
    ("20,000 values", "name: x\nstem: [" + ", ".join(["1"] * 20_000) + "]\n", "more than 10,000 values", 2),
    ("100 KB of comments", "name: x\n" + "# padding\n" * 10_000, "larger than 65,536 bytes", None),
    ("a 5,000-character string", "name: x\ndescription: " + "x" * 5000 + "\n", "5,000 characters", 2),
    ("a 5,000-digit number", "name: x\nparams: {width: " + "9" * 5000 + "}\n", "5,000 characters", 2),
    ("a 30-digit number", "name: x\nparams: {width: " + "9" * 30 + "}\n", "at most 24", 2),
    ("infinity", "name: x\nparams: {rate: .inf}\n", "not a finite number", 2),
    ("not a number", "name: x\nparams: {rate: .nan}\n", "not a finite number", 2),
    ("overflowing float", "name: x\nparams: {rate: 1.0e+400}\n", "not a finite number", 2),
    ("empty file", "", "is empty", None),
    ("only blank lines", "\n\n   \n", "is empty", None),
    ("only comments", "# name: x\n", "holds nothing", None),
    ("a list at the top level", "- conv: 8\n- flatten\n", "holds a list", None),
    ("a string at the top level", "just some words\n", "holds a single string", None),
    ("two documents", "name: a\n---\nname: b\n", "invalid YAML", 2),
    ("a python tag", "name: !!python/object/apply:os.system [ls]\n", "not allowed", 1),
    ("a timestamp tag", "name: x\ndescription: 2024-01-01\n", "not allowed", 2),
]


@pytest.mark.parametrize("content, expected, line", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_refused_quickly_with_file_and_line(tmp_path, content, expected, line):
    path = write_bytes(tmp_path, content.encode())
    message = refused(path)
    assert str(path) in message
    assert expected in message
    if line is not None:
        assert f"line {line}" in message


@pytest.mark.parametrize("data, line", [
    (b"name: caf\xe9\n", 1),  # Latin-1
    (b"name: x\ndescription: \xff\xfe\n", 2),
    ("name: x\n".encode("utf-16"), 1),
])
def test_a_file_that_is_not_utf8_is_refused(tmp_path, data, line):
    message = refused(write_bytes(tmp_path, data))
    assert "not UTF-8 text" in message and f"line {line}" in message


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    message = refused(tmp_path / "dir.yaml")
    assert "is a directory" in message


def test_an_endless_extends_chain_is_refused(tmp_path):
    for i in range(30):
        (tmp_path / f"r{i}.yaml").write_text(f"name: r{i}\nextends: r{i + 1}.yaml\n")
    (tmp_path / "r30.yaml").write_text(TINY_RECIPE)
    message = refused(tmp_path / "r0.yaml")
    assert message.startswith(str(tmp_path / "r0.yaml")) and "longer than 16" in message


def test_a_cyclic_extends_names_the_file_asked_for_and_the_chain(tmp_path):
    (tmp_path / "cycle_a.yaml").write_text("name: a\nextends: cycle_b.yaml\n")
    (tmp_path / "cycle_b.yaml").write_text("name: b\ndescription: second\nextends: cycle_c.yaml\n")
    (tmp_path / "cycle_c.yaml").write_text("name: c\nextends: cycle_a.yaml\n")
    message = refused(tmp_path / "cycle_a.yaml")
    a, b, c = (str(tmp_path / f"cycle_{x}.yaml") for x in "abc")
    assert message.startswith(f"{a}: cyclic extends: cycle_a -> cycle_b -> cycle_c -> cycle_a")
    assert f"{a} (line 2) extends {b}" in message
    assert f"{b} (line 3) extends {c}" in message
    assert f"{c} (line 2) extends {a}" in message


# ----------------------------------------------------------------------------- expressions


def chain(name: str, first, step: str, count: int = 40) -> dict:
    """params p0 = first, p<i> = step with {prev} replaced by p<i-1>: costs grow as 2**count."""
    params = {f"{name}0": first}
    for i in range(1, count):
        params[f"{name}{i}"] = "${" + step.format(prev=f"{name}{i - 1}") + "}"
    return params


EXPENSIVE_PARAMS = [
    ("power tower", {"w": "${10 ** 10 ** 10}"}, "is not allowed"),
    ("products", {"w": "${" + " * ".join(["99999999"] * 30) + "}"}, "beyond the ±10**15"),
    ("squaring chain", chain("n", 3, "{prev} * {prev}"), "beyond the ±10**15"),
    ("string doubling chain", chain("s", "ab", "{prev} + {prev}"), "characters"),
    ("list doubling chain", chain("l", [1], "{prev} + {prev}"), "more than 10,000 values"),
    ("nested repetition", {"w": "${[[1] * 1000] * 1000}"}, "more than 10,000 values"),
    ("nesting chain", chain("v", [1], "[{prev}]", 60), "nested more than 32"),
    ("a long sum", {"w": "${" + "+".join(["1"] * 400) + "}"}, "too complex"),
    ("deep unary minus", {"w": "${" + "-" * 900 + "1}"}, "too complex"),
    ("a long expression", {"w": "${" + " " * 2000 + "1}"}, "at most 1,000"),
    ("a huge rounding", {"w": "${round(5, -100000000000)}"}, "at most 30 digits"),
    ("a huge float", {"w": "${int(1.0e300)}"}, "beyond the ±10**15"),
    ("params 200 deep", {**{f"a{i}": "${a%d}" % (i + 1) for i in range(200)}, "a200": 8}, "more than 64"),
]


@pytest.mark.parametrize("params, expected", [c[1:] for c in EXPENSIVE_PARAMS],
                         ids=[c[0] for c in EXPENSIVE_PARAMS])
def test_an_expensive_expression_is_refused_quickly(tmp_path, params, expected):
    path = tmp_path / "costly.yaml"
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe["params"].update(params)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, width=10_000))
    message = refused(path)
    assert str(path) in message and "field params." in message
    assert expected in message


def test_expression_bounds_hold_for_direct_evaluation():
    with alarm(), pytest.raises(ExpressionError, match="beyond"):
        evaluate("x * x", {"x": 10**14})
    assert evaluate("x * 10", {"x": 10**14}) == 10**15  # the bound itself is allowed


# ----------------------------------------------------------------------------- planned network


@pytest.mark.parametrize("stage, expected", [
    ({"name": "big", "repeat": 1_000_000, "blocks": [{"identity": {"filters": 8}}]}, "more than 5,000 blocks"),
    ({"name": "big", "blocks": [{"identity": {"filters": 8, "repeat": 1_000_000}}]}, "more than 5,000 blocks"),
    ({"name": "big", "repeat": "${10 ** 6}", "blocks": [{"bn": None}]}, "is not allowed"),
    ({"name": "big", "residual": ["identity", 1_000_000, 8, 1]}, "more than 5,000 blocks"),
    ({"name": "big", "blocks": [{"dense": {"layers": 100_000, "growth_rate": 4}}]}, "more than 20,000 layers"),
    ({"name": "big", "repeat": 4000, "blocks": [{"dense": {"layers": 1, "growth_rate": 1}}]},
     "more than 20,000 layers"),
])
def test_the_cost_of_the_planned_network_is_bounded(tmp_path, stage, expected):
    recipe = yaml.safe_load(TINY_RECIPE)
    recipe["stages"].append(stage)
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    message = refused(path)
    assert str(path) in message and "stages[2]" in message and expected in message


def test_a_huge_override_is_refused_and_named():
    message = refused("resnet50", blocks=[3, 4, 3000, 3])
    assert message.startswith("keyword argument blocks=[3, 4, 3000, 3] gives, at ")
    assert "resnet50.yaml" in message and "more than 20,000 layers" in message
    # The deepest network of the papers still plans: ResNet-1202 (He et al. 2015, Section 4.2).
    with alarm():
        assert len(load_recipe("resnet20").plan(depth=1202).steps) > 600


# ----------------------------------------------------------------------------- fuzzing the loader

YAML_TEXT = st.text(alphabet=string.ascii_letters[:6] + string.digits[:4] + " \n\t:-[]{},&*!|>'\"#%@`$.<=?",
                    max_size=300)
SCALARS = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True), st.booleans(), st.none(),
                    st.text(max_size=20), st.sampled_from(["${width}", "${10 ** 9}", "${[1] * 99999}",
                                                           "conv", "dense", "identity", "relu"]))
KEYS = st.sampled_from(["name", "params", "stem", "stages", "head", "extends", "defaults", "tune",
                        "metadata", "blocks", "residual", "repeat", "conv", "filters", "width",
                        "units", "dense", "layers", "default", "int", "rule", "x"])
STRUCTURES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=5)), max_leaves=40)


def loads_or_refuses(path: Path) -> None:
    with alarm():
        try:
            load_recipe(path)
        except RecipeError as exc:
            assert str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=400), YAML_TEXT.map(str.encode)))
def test_random_bytes_give_a_recipe_or_a_recipe_error(tmp_path_factory, data):
    loads_or_refuses(write_bytes(tmp_path_factory.mktemp("bytes"), data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structure=STRUCTURES, base=st.booleans())
def test_random_yaml_structures_give_a_recipe_or_a_recipe_error(tmp_path_factory, structure, base):
    if base and isinstance(structure, dict):  # graft onto a valid recipe to get past the first checks
        recipe = yaml.safe_load(TINY_RECIPE)
        recipe.update(structure)
        structure = recipe
    try:
        text = yaml.safe_dump(structure, sort_keys=False, allow_unicode=False)
    except yaml.YAMLError:
        return
    loads_or_refuses(write_bytes(tmp_path_factory.mktemp("yaml"), text.encode()))
