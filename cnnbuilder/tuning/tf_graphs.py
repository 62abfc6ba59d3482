"""Release what a tuning trial traced, so a long search in one process keeps a flat memory.

`keras.backend.clear_session()` resets Keras, but every `tf.custom_gradient` traced in
graph mode (Keras' training step uses some) registers its gradient function, which holds
the whole traced graph, in TensorFlow's global gradient registry for ever: about 3 MB per
trial of a tiny model, 37 MiB per trial of a small DenseNet. Nothing uses a finished
trial's entries again, so `released_graphs` drops the entries a trial added.

The registry is TensorFlow's private ``tensorflow.python.framework.ops._gradient_registry``
(a `Registry` whose ``_registry`` dict maps ``"CustomGradient-<uid>"`` to the function),
checked against TensorFlow 2.21 (`TENSORFLOW_CHECKED`); where it is missing the release
does nothing but clear the Keras session. tests/test_tf_graphs.py fails when TensorFlow
moves it or stops registering custom gradients there.
"""

from __future__ import annotations

import contextlib
import gc

import keras

TENSORFLOW_CHECKED = "2.21"
CUSTOM_GRADIENT_PREFIX = "CustomGradient"


def gradient_registry() -> dict | None:
    """TensorFlow's global gradient registry (name -> function); None where it moved."""
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return None
    return registry if isinstance(registry, dict) else None


def custom_gradient_count() -> int:
    """How many traced custom gradients the registry holds (0 where it moved)."""
    registry = gradient_registry() or {}
    return sum(str(key).startswith(CUSTOM_GRADIENT_PREFIX) for key in registry)


@contextlib.contextmanager
def released_graphs():
    """Within the block, trace freely: when it ends (however), the Keras session is
    cleared and the custom gradients registered inside the block are dropped."""
    registry = gradient_registry()
    before = frozenset(registry) if registry is not None else frozenset()
    try:
        yield
    finally:
        keras.backend.clear_session()
        if registry is not None:
            added = [key for key in registry
                     if key not in before and str(key).startswith(CUSTOM_GRADIENT_PREFIX)]
            for key in added:
                del registry[key]
        gc.collect()


class _RetracingFilter:
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing"
    warning: every trial traces new functions on purpose, so during a search it is a
    false alarm."""

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def no_retracing_warnings():
    """Within the block, TensorFlow's retracing warning is not logged."""
    import tensorflow as tf

    logger, dropped = tf.get_logger(), _RetracingFilter()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
