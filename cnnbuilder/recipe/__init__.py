"""The recipe language: pure Python, importing it never imports TensorFlow."""

from cnnbuilder.recipe.document import Document, read_document
from cnnbuilder.recipe.recipe import Recipe
from cnnbuilder.recipe.resolve import Plan, Step
from cnnbuilder.recipe.vocabulary import BLOCKS

__all__ = ["BLOCKS", "Document", "Plan", "Recipe", "Step", "read_document"]
