"""Hyperparameter search with KerasTuner over a recipe's `tune:` section."""

from cnnbuilder.tuning.search import HyperRecipe, tune

__all__ = ["HyperRecipe", "tune"]
