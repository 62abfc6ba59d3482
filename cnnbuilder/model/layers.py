"""Custom Keras layers, for the few features that standard layers cannot express.

Every layer here is registered serializable under the package name "cnnbuilder", so a
`.keras` file that uses one loads (with `safe_mode=True`) once `cnnbuilder.model.layers` has
been imported. Models built without these features contain standard layers only.

`DenseLayerBottleneck` is the memory-efficient DenseNet layer input (Pleiss et al. 2017,
"Memory-Efficient Implementation of DenseNets"): the concatenation of the previous feature
maps, BatchNorm, activation and the following convolution — and, for a whole bottleneck
layer, the second BatchNorm, activation and convolution too — run as one unit whose
intermediate results are recomputed in the backward pass instead of being kept, so a dense
block stores O(L) rather than O(L²) feature maps. It owns standard BatchNormalization and
Conv2D layers as sublayers, so its weights are exactly those of the plain
BN → activation → Conv2D [→ BN → activation → Conv2D] chain (same shapes and order).
"""

from __future__ import annotations

import keras
from keras import ops


def _as_layer(value, expected: type, what: str):
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not isinstance(value, expected):
        raise TypeError(f"DenseLayerBottleneck: `{what}` must be a keras.layers.{expected.__name__} "
                        f"or its serialized config. Received: {value!r}")
    return value


@keras.saving.register_keras_serializable(package="cnnbuilder")
class DenseLayerBottleneck(keras.layers.Layer):
    """Concatenate → BatchNorm → activation → Conv2D [→ BatchNorm → activation [→ Conv2D]],
    recomputed in the backward pass.

    Called on a list of 4-D feature maps (channels last). In training (`training=True`)
    the steps run inside `recomputed` — `tf.recompute_grad` on TensorFlow, a custom VJP
    on JAX — over positional tensors only (the variable values are read outside and
    passed in), so only the inputs and the output are kept for the backward pass. On
    other backends, and in inference, it runs without recomputation; the results are the
    same either way.

    BatchNorm moving statistics are updated exactly once per call: the normalization runs
    inside a `keras.StatelessScope`, whose collected updates are returned by the recomputed
    function and assigned outside it, so the backward recomputation discards its own.

    Args:
        norm: a `keras.layers.BatchNormalization` (or its serialized config) over the
            concatenated channels.
        conv: a `keras.layers.Conv2D` (or its serialized config) applied after the
            activation.
        activation: activation between the two (name or callable), default "relu".
        recompute: False turns the recomputation off (same results, more memory).
        norm2: optional second BatchNormalization (or its config) after `conv`, followed
            by the activation: a whole DenseNet-B layer's 1×1 part.
        conv2: optional second Conv2D (or its config) after `norm2` and the activation:
            the layer's 3×3 convolution, so the unit is the whole dense layer and keeps
            nothing but its inputs and its k output channels.
    """

    def __init__(self, norm, conv, activation="relu", recompute: bool = True, norm2=None,
                 conv2=None, **kwargs):
        # Variable values are read without casting (mixed precision): the sublayers cast
        # them to their own compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.norm = _as_layer(norm, keras.layers.BatchNormalization, "norm")
        self.conv = _as_layer(conv, keras.layers.Conv2D, "conv")
        self.activation = keras.activations.get(activation)
        self.recompute = bool(recompute)
        self.norm2 = (None if norm2 is None
                      else _as_layer(norm2, keras.layers.BatchNormalization, "norm2"))
        self.conv2 = None if conv2 is None else _as_layer(conv2, keras.layers.Conv2D, "conv2")
        if self.conv2 is not None and self.norm2 is None:
            raise ValueError(f"DenseLayerBottleneck: `conv2` needs `norm2` before it. "
                             f"Received: norm2=None, conv2={self.conv2.name!r}")

    # ------------------------------------------------------------------ structure
    @property
    def canonical_sublayers(self) -> list:
        """The standard layers this layer stands for, in the order of the plain graph
        (BatchNormalization, Conv2D[, BatchNormalization[, Conv2D]]); used to pair weights
        with the plain build.

        Returns:
            `[norm, conv]` followed by `norm2` and `conv2` where given.
        """
        return [l for l in (self.norm, self.conv, self.norm2, self.conv2) if l is not None]

    @staticmethod
    def _concat_shape(input_shape):
        shapes = _shape_list(input_shape)
        channels = [s[-1] for s in shapes]
        total = None if any(c is None for c in channels) else sum(channels)
        return tuple(shapes[0][:-1]) + (total,)

    def build(self, input_shape):
        shape = self._concat_shape(input_shape)
        if shape[-1] is None:
            raise ValueError(f"{self.name}: the channel count of every input must be known; "
                             f"received input shapes {input_shape}")
        if not self.norm.built:
            self.norm.build(shape)
        if not self.conv.built:
            self.conv.build(shape)
        shape = self.conv.compute_output_shape(shape)
        if self.norm2 is not None and not self.norm2.built:
            self.norm2.build(shape)
        if self.conv2 is not None and not self.conv2.built:
            self.conv2.build(shape)

    def compute_output_shape(self, input_shape):
        shape = self.conv.compute_output_shape(self._concat_shape(input_shape))
        return shape if self.conv2 is None else self.conv2.compute_output_shape(shape)

    # ----------------------------------------------------------------------- call
    def call(self, inputs, training=None):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not training:
            return self._forward(inputs, training=False)

        variables = [v for l in self.canonical_sublayers for v in l.weights]
        statistics = [v for l in self.canonical_sublayers for v in l.non_trainable_weights]
        updated: list = []  # indices into `statistics`, found while tracing

        def forward(*args):
            values, tensors = args[:len(variables)], list(args[len(variables):])
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                before = [scope.get_current_value(v) for v in statistics]
                outputs = self._forward(tensors, training=True)
                after = [scope.get_current_value(v) for v in statistics]
            updated[:] = [i for i, (b, a) in enumerate(zip(before, after)) if a is not b]
            return (outputs, *[after[i] for i in updated])

        if self.recompute and keras.backend.backend() in ("tensorflow", "jax"):
            forward = recomputed(forward)
        # Positional tensors only: tf.recompute_grad rejects keyword arguments in graph mode.
        results = forward(*[v.value for v in variables], *inputs)
        if not isinstance(results, (tuple, list)):
            results = (results,)
        outputs, new_values = results[0], results[1:]
        for index, value in zip(updated, new_values):  # the one update of this step
            statistics[index].assign(ops.stop_gradient(value))
        return outputs

    def _forward(self, tensors, training):
        """The unit's computation, the same in the forward pass and its recomputation."""
        x = tensors[0] if len(tensors) == 1 else ops.concatenate(tensors, axis=-1)
        x = self.norm(x, training=training)
        x = self.conv(self.activation(x))
        if self.norm2 is not None:
            x = self.activation(self.norm2(x, training=training))
        if self.conv2 is not None:
            x = self.conv2(x)
        return x

    # -------------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()
        config.update({
            "norm": keras.saving.serialize_keras_object(self.norm),
            "conv": keras.saving.serialize_keras_object(self.conv),
            "activation": keras.activations.serialize(self.activation),
            "recompute": self.recompute,
        })
        # Only when present, so configs of the two-step form stay as they were.
        for key in ("norm2", "conv2"):
            if getattr(self, key) is not None:
                config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config


def recomputed(function):
    """`function` (positional float tensors in, a tuple of tensors out) with its
    intermediate results recomputed in the backward pass instead of kept.

    On TensorFlow this is `keras.remat` (`tf.recompute_grad`). On JAX it cannot be
    `keras.remat` (`jax.checkpoint`): XLA's CPU pipeline removes the optimization barriers
    with which `jax.checkpoint` keeps the recomputation apart, and common-subexpression
    elimination then merges it back into the forward pass, so every intermediate is kept
    after all (measured: the same compiled temp memory as without it, or more). Here the
    backward pass recomputes from inputs to which it adds a zero derived from the
    incoming cotangent, as `tf.recompute_grad` does for XLA: XLA can neither merge the
    recomputation with the forward pass nor schedule it before that cotangent exists.
    Adding zero leaves every value as it is (only -0.0 becomes +0.0), so the gradients
    are those of `function`.

    Args:
        function: the function to recompute; it must not close over trainable state
            (pass variable values in as arguments).

    Returns:
        A function of the same arguments and results.
    """
    if keras.backend.backend() != "jax":
        return keras.remat(function)
    import jax  # only on the JAX backend
    import jax.numpy as jnp

    @jax.custom_vjp
    def wrapped(*args):
        return function(*args)

    def forward(*args):
        return function(*args), args

    def backward(args, cotangents):
        first = jnp.ravel(jax.tree_util.tree_leaves(cotangents)[0])[0]
        # 0 unless the cotangent is NaN, which XLA cannot know while compiling.
        zero = jnp.where(jnp.isnan(first), first, jnp.zeros_like(first))
        args = [a + zero.astype(a.dtype) for a in args]
        return jax.vjp(function, *args)[1](cotangents)

    wrapped.defvjp(forward, backward)
    return wrapped


def _shape_list(input_shape) -> list:
    """A list of shapes from one shape or a list of them."""
    if isinstance(input_shape, (list, tuple)) and input_shape and all(
            isinstance(s, (list, tuple)) for s in input_shape):
        return [tuple(s) for s in input_shape]
    return [tuple(input_shape)]


@keras.saving.register_keras_serializable(package="cnnbuilder")
class DropPath(keras.layers.Layer):
    """Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): in
    training, each example's input is dropped whole with probability `rate` (its residual
    branch, or a dense layer's new features, contributes nothing for it) and kept ones are
    scaled by 1 / (1 - rate), so the expectation is unchanged; in inference it is the
    identity (the paper instead scales by the survival probability at test time: the same
    network in expectation). timm's `DropPath`.

    The per-example draws come from the layer's `keras.random.SeedGenerator`, which the
    training engine re-seeds every epoch (`training.callbacks.EpochSeeds`), so a resumed run
    drops what the uninterrupted one dropped.

    Args:
        rate: the drop probability in [0, 1).
        seed: the seed generator's initial seed.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(rate) < 1:
            raise ValueError(f"DropPath: `rate` must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        """`inputs` with whole examples zeroed (training) or as they are (inference)."""
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        draws = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
        mask = ops.cast(ops.less(draws, keep), inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        """The input's shape."""
        return input_shape

    def get_config(self) -> dict:
        """The config Keras saves: rate and seed."""
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def without_drop_path(model: keras.Model) -> keras.Model:
    """`model` with each `DropPath` replaced by a standard `keras.layers.Identity` of the same
    name (DropPath is the identity in inference), the weights copied by layer name: the
    network a finished run ships, which loads where cnnbuilder is not installed. `model`
    itself when it has no DropPath (the copy is uncompiled)."""
    if not any(isinstance(layer, DropPath) for layer in model._flatten_layers(include_self=False)):
        return model

    def clone(layer):
        if isinstance(layer, DropPath):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


__all__ = ["DenseLayerBottleneck", "DropPath", "recomputed", "without_drop_path"]
