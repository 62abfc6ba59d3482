"""Recipes become networks: the blocks, the layer factory, the builder, features and weights.

Model-building code uses `keras.layers` and `keras.ops` only, so recipes build under every
Keras backend.
"""

from cnnbuilder.recipe.checks import KERAS_BACKENDS, environment_backend

# Before Keras is first imported: a bogus $KERAS_BACKEND named plainly (a recipe builds
# under any backend Keras has; training and the command line take tensorflow or jax).
environment_backend(allowed=KERAS_BACKENDS)

from cnnbuilder.model.builder import build  # noqa: E402
from cnnbuilder.model.features import feature_info, layer_strides, stage_outputs
from cnnbuilder.model.freeze import freeze
from cnnbuilder.model.onednn import cpu_has_avx512, find_onednn_crash_pattern
from cnnbuilder.model.weights import transfer_weights

__all__ = ["build", "cpu_has_avx512", "feature_info", "find_onednn_crash_pattern", "freeze",
           "layer_strides", "stage_outputs", "transfer_weights"]
