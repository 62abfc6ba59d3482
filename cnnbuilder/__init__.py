"""cnnbuilder: classic CNN architectures as readable YAML recipes, built into Keras models.

The recipe language (`cnnbuilder.recipe`) is pure Python; TensorFlow and Keras are only
imported when a model is built, trained, tuned or exported.
"""

from __future__ import annotations

import importlib
import os

# TensorFlow's C++ start-up chatter is noise for a command-line tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnnbuilder.errors import (  # noqa: E402
    CnnBuilderError,
    DataError,
    ExportError,
    RecipeError,
    RunError,
    TuningError,
    WeightsError,
)
from cnnbuilder.zoo import list_recipes, load_recipe  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "build": "cnnbuilder.model",
    "stage_outputs": "cnnbuilder.model",
    "feature_info": "cnnbuilder.model",
    "transfer_weights": "cnnbuilder.model",
    "load_model": "cnnbuilder.model.loading",
    "train": "cnnbuilder.training",
    "HyperRecipe": "cnnbuilder.tuning",
    "tune": "cnnbuilder.tuning",
    "export": "cnnbuilder.serving",
    "predict": "cnnbuilder.serving",
    "load_dataset": "cnnbuilder.data",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnbuilder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CnnBuilderError", "DataError", "ExportError", "RecipeError", "RunError", "TuningError",
    "WeightsError", "list_recipes", "load_recipe", *_LAZY,
]
