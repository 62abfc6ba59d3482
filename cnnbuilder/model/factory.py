"""`LayerFactory`: creates Keras layers with the recipe's `defaults:` applied.

Blocks ask for "a convolution followed by BatchNorm" and the factory decides the bias,
padding style, initializer, BN epsilon/momentum and activation the recipe asked for, so
one block function serves the Keras, torchvision and paper variants of a network.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnbuilder.recipe.vocabulary import BLOCKS


def _spec_defaults(kind: str) -> dict:
    return {f.name: f.default for f in BLOCKS[kind].fields if not f.required}


class LayerFactory:
    def __init__(self, defaults: dict | None = None):
        defaults = defaults or {}
        self.conv_defaults = {**_spec_defaults("conv"), **defaults.get("conv", {})}
        self.bn_defaults = {**_spec_defaults("bn"), **defaults.get("bn", {})}
        self.fc_defaults = {**_spec_defaults("fc"), **defaults.get("fc", {})}
        self.activation = defaults.get("activation", {}).get("function", "relu")

    def conv(self, x, filters, kernel, *, name, stride=1, groups=1, dilation=1, padding=None,
             use_bias=None, activation=None, kernel_initializer=None, bn_follows=False):
        """Conv2D; `padding="symmetric"` pads kernel//2 explicitly first (PyTorch style)."""
        padding = padding or self.conv_defaults["padding"]
        if use_bias is None:
            use_bias = self.conv_defaults["use_bias"]
        if use_bias == "auto":
            use_bias = not bn_follows
        if padding == "symmetric":
            k = kernel if isinstance(kernel, (tuple, list)) else (kernel, kernel)
            d = dilation if isinstance(dilation, (tuple, list)) else (dilation, dilation)
            amount = tuple(((ki - 1) * di + 1) // 2 for ki, di in zip(k, d))
            if any(amount):
                x = layers.ZeroPadding2D(padding=amount, name=f"{name}_pad")(x)
            padding = "valid"
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            groups=groups,
            dilation_rate=dilation,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=kernel_initializer or self.conv_defaults["kernel_initializer"],
            name=name,
        )(x)

    def bn(self, x, *, name, epsilon=None, momentum=None):
        return layers.BatchNormalization(
            axis=-1,
            epsilon=self.bn_defaults["epsilon"] if epsilon is None else epsilon,
            momentum=self.bn_defaults["momentum"] if momentum is None else momentum,
            name=name,
        )(x)

    def act(self, x, *, name, function=None):
        return layers.Activation(function or self.activation, name=name)(x)

    def conv_bn_act(self, x, filters, kernel, *, name, stride=1, groups=1, act=True, **kwargs):
        """The conv → BN (→ activation) triple most blocks are made of."""
        x = self.conv(x, filters, kernel, stride=stride, groups=groups, bn_follows=True,
                      name=f"{name}_conv", **kwargs)
        x = self.bn(x, name=f"{name}_bn")
        return self.act(x, name=f"{name}_{self.activation}") if act else x

    def fc(self, x, units, *, name, activation=None, use_bias=None, kernel_initializer=None):
        return layers.Dense(
            units,
            activation=activation,
            use_bias=self.fc_defaults["use_bias"] if use_bias is None else use_bias,
            kernel_initializer=kernel_initializer or self.fc_defaults["kernel_initializer"],
            name=name,
        )(x)


__all__ = ["LayerFactory", "keras"]
