"""Random edits of valid recipes give a plan (and a model) or a RecipeError, never another
exception: the planning property is in the fast tier, the building one imports Keras."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnbuilder
from cnnbuilder import RecipeError
from helpers import TINY_RECIPE

BASE = yaml.safe_load(TINY_RECIPE)
BASE["metadata"]["input_shape"] = [12, 12, 3]
BASE["training"] = {"epochs": 2, "batch_size": 8, "augment": ["flip"]}
BASE["stages"].append({"name": "rows", "residual": ["convolutional", "${units[0]}", 8, 1, {"kernel": 3}]})
BASE["stages"].append({"name": "s3", "blocks": [
    {"dense": {"layers": 2, "growth_rate": 4}},
    {"transition": {"compression": 0.5}},
    {"bottleneck": {"filters": 4, "groups": 2, "width": 8}},
    {"inception": {"b1": 2, "b3_reduce": 2, "b3": 4, "b5_reduce": 2, "b5": 2, "pool_proj": 2}},
]})

VALUES = st.one_of(
    st.integers(-3, 40), st.floats(-2, 3, allow_nan=False), st.booleans(), st.none(),
    st.sampled_from(["", "relu", "max", "avg", "same", "valid", "symmetric", "v2", "pad",
                     "${width}", "${width * 0}", "${units[5]}", "${nope}", "${width / 3}",
                     "conv", "dense", "identity", "${[1] * 3}", "1x1", "auto", "bottleneck",
                     "convolutional", "last", "first"]),
    st.lists(st.integers(-1, 5), max_size=3),
    st.dictionaries(st.sampled_from(["filters", "repeat", "units", "kernel", "x"]),
                    st.integers(-1, 9), max_size=2),
)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, prefix + (index,))


ALL_PATHS = [p for p in paths(BASE) if p]


@st.composite
def edited_recipes(draw):
    recipe = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = recipe
        try:
            for part in path[:-1]:
                parent = parent[part]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            continue
    return recipe


@pytest.mark.fast
def test_the_base_recipe_is_valid():
    plan = cnnbuilder.load_recipe(BASE).plan()
    assert {"identity", "convolutional", "dense", "transition", "bottleneck", "inception"} <= {
        s.block for s in plan.steps}


@pytest.mark.fast
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_recipes())
def test_random_edits_give_a_plan_or_a_recipe_error(recipe):
    try:
        plan = cnnbuilder.load_recipe(recipe).plan()
    except RecipeError:
        return
    assert plan.steps and all(step.output_shape for step in plan.steps)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_recipes())
def test_random_edits_give_a_model_or_a_recipe_error(recipe):
    import keras

    try:
        model = cnnbuilder.build(recipe)
    except RecipeError:
        return
    finally:
        keras.backend.clear_session()
    assert isinstance(model, keras.Model)
