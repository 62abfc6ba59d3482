"""The keywords a user gives `cnnbuilder.train`, checked at the edge with the helpers the
command line's flags use (`cnnbuilder.recipe.checks`), before the engine
(`training.engine.train`) loads data or builds anything."""

from __future__ import annotations

from cnnbuilder.data.folders import check_output_outside
from cnnbuilder.recipe import checks


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
