"""Hyperparameter search with KerasTuner over a recipe's `tune:` section.

`HyperRecipe` (`hypermodel`) is the recipe's space as a KerasTuner HyperModel whose trials
train through `cnnbuilder.training`; `tune` (`search`) runs a whole, resumable,
optionally distributed search into a directory (`results`). The oracles (`oracles`), the
tuner (`tuner`) and the distributed chief (`chief`) use KerasTuner's public API; its few
private names are all in `keras_tuner_hooks`, TensorFlow's in `tf_graphs`.
"""

from cnnbuilder.tuning.hypermodel import HyperRecipe
from cnnbuilder.tuning.oracles import OBJECTIVES, TUNERS
from cnnbuilder.tuning.results import clear_search
from cnnbuilder.tuning.search import tune

__all__ = ["HyperRecipe", "OBJECTIVES", "TUNERS", "clear_search", "tune"]
