"""What cnnbuilder.tuning.tf_graphs relies on in TensorFlow's private gradient registry.

Fails when a TensorFlow release moves the registry or stops registering each traced
`tf.custom_gradient` there (checked against TensorFlow 2.21): then a long search would
leak each trial's graphs again, or the release would silently do nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cnnbuilder.tuning import tf_graphs


def _trace_a_custom_gradient():
    """Trace a new tf.function holding a custom gradient; returns its gradient (2x)."""

    @tf.custom_gradient
    def double(x):
        return 2.0 * x, lambda upstream: 2.0 * upstream

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = double(x)
        return tape.gradient(y, x)

    return float(step(tf.constant(3.0)))


def test_the_registry_is_where_the_release_expects_it():
    registry = tf_graphs.gradient_registry()
    assert isinstance(registry, dict)
    before = set(registry)
    assert _trace_a_custom_gradient() == 2.0
    added = set(registry) - before
    assert added and all(str(k).startswith(tf_graphs.CUSTOM_GRADIENT_PREFIX) for k in added)


def test_a_trials_entries_are_released_and_earlier_ones_kept():
    _trace_a_custom_gradient()
    kept = set(tf_graphs.gradient_registry())
    count = tf_graphs.custom_gradient_count()
    with tf_graphs.released_graphs():
        for _ in range(3):
            _trace_a_custom_gradient()
        assert tf_graphs.custom_gradient_count() >= count + 3
    assert tf_graphs.custom_gradient_count() == count
    assert set(tf_graphs.gradient_registry()) == kept


def test_a_keras_training_step_is_released_too():
    with tf_graphs.released_graphs():
        before = tf_graphs.custom_gradient_count()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(tf.ones((8, 4)), tf.ones((8, 2)), epochs=1, verbose=0)
        traced = tf_graphs.custom_gradient_count() - before
    assert traced >= 1  # Keras' training step registers one: the leak this module fixes
    assert tf_graphs.custom_gradient_count() == before
