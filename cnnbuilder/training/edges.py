"""`cnnbuilder.train` as the Python API offers it: the keywords a user gives checked at
the edge, with the helpers the command line's flags use (`cnnbuilder.recipe.checks`),
before the engine (`training.engine.train`) loads data or builds anything."""

from __future__ import annotations

import contextlib
import functools

from cnnbuilder.data.folders import check_output_outside
from cnnbuilder.model import cost
from cnnbuilder.recipe import checks
from cnnbuilder.training import engine
from cnnbuilder.zoo import load_recipe


@functools.wraps(engine.train)
def train(recipe_or_model, dataset="digits", **kwargs):
    """`training.engine.train` after its keywords are checked and a recipe's model is
    checked against the cost bound (`model.cost`), before any data is loaded."""
    check_keywords(dataset, kwargs)
    if not hasattr(recipe_or_model, "layers"):  # a recipe, not a Keras model
        batch = (kwargs.get("batch_size") or (kwargs.get("training") or {}).get("batch_size")
                 or load_recipe(recipe_or_model).training.get("batch_size"))
        with cost.batch_size_for_bound(batch) if batch else contextlib.nullcontext():
            cost.preflight(recipe_or_model, input_shape=kwargs.get("input_shape"),
                           params=kwargs.get("params"))
    return engine.train(recipe_or_model, dataset, **kwargs)


def check_keywords(dataset, kwargs: dict) -> None:
    """UsageError/DataError naming the first keyword of `train` with a bad value."""
    if "seed" in kwargs:
        kwargs["seed"] = checks.seed(kwargs["seed"])
    for name in ("epochs", "batch_size"):
        if kwargs.get(name) is not None:
            kwargs[name] = checks.integer_in_range(kwargs[name], name, 1)
    if kwargs.get("learning_rate") is not None:
        checks.positive_number(kwargs["learning_rate"], "learning_rate")
    if kwargs.get("weight_decay") is not None:
        checks.positive_number(kwargs["weight_decay"], "weight_decay", allow_zero=True)
    if kwargs.get("input_shape") is not None:
        kwargs["input_shape"] = checks.input_shape(kwargs["input_shape"])
    check_output_outside(dataset, kwargs.get("output"))
