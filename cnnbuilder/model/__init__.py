"""Recipes become networks: the blocks, the layer factory, the builder, features and weights.

Model-building code uses `keras.layers` and `keras.ops` only, so recipes build under every
Keras backend.
"""

from cnnbuilder.model.builder import build, stage_outputs
from cnnbuilder.model.weights import transfer_weights

__all__ = ["build", "stage_outputs", "transfer_weights"]
