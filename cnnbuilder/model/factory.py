"""`LayerFactory`: creates Keras layers with the recipe's `defaults:` applied.

Blocks ask for "a convolution followed by BatchNorm" and the factory decides the bias,
padding style, initializer, BN epsilon/momentum and activation the recipe asked for, so
one block function serves the Keras, torchvision and paper variants of a network.

The factory is also the one place that decides how a convolution is expressed in layers:
a strided 1×1 convolution on a narrow input becomes a 1×1 pooling that subsamples and the
stride-1 convolution, which computes the same thing and which TensorFlow's oneDNN kernels
train without crashing on AVX-512 CPUs (see `cnnbuilder.model.onednn`).
"""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.onednn import is_crash_pattern
from cnnbuilder.recipe.vocabulary import BLOCKS


def _spec_defaults(kind: str) -> dict:
    return {f.name: f.default for f in BLOCKS[kind].fields if not f.required}


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class LayerFactory:
    """Layers with a recipe's `defaults:` applied.

    Args:
        defaults: the recipe's resolved `defaults:` section, `{block: {field: value}}`; the
            factory reads `conv`, `bn`, `fc` and `activation` (other entries are block
            defaults the resolver has already applied). Missing fields take the block
            vocabulary's defaults.
    """

    def __init__(self, defaults: dict | None = None):
        defaults = defaults or {}
        self.conv_defaults = {**_spec_defaults("conv"), **defaults.get("conv", {})}
        self.bn_defaults = {**_spec_defaults("bn"), **defaults.get("bn", {})}
        self.fc_defaults = {**_spec_defaults("fc"), **defaults.get("fc", {})}
        self.activation = defaults.get("activation", {}).get("function", "relu")
        # Stochastic depth, set by a training run (`RunSettings`: the plan's defaults carry
        # {"rate", "rule", "units"}); absent, no DropPath layer is built at all.
        self.drop_path_config = defaults.get("drop_path") or {}
        self._drop_path_unit = 0

    def drop_path(self, x, *, name):
        """`x` through a `DropPath` layer `name` at the next unit's drop rate (stochastic
        depth over the plan's units in build order); `x` itself without stochastic depth.

        The rule ``linear`` is Huang et al. 2016, §3 ("linear decay"): unit l of L drops
        with probability rate·l/L, so the first units are nearly always kept and the last
        drops with `rate`; ``uniform`` drops every unit with `rate`."""
        config = self.drop_path_config
        if not config.get("rate"):
            return x
        self._drop_path_unit += 1
        rate = config["rate"]
        if config.get("rule", "linear") == "linear":
            rate = rate * self._drop_path_unit / max(config["units"], self._drop_path_unit)
        from cnnbuilder.model.layers import DropPath

        return DropPath(rate, name=name)(x)

    def conv_layer(self, filters, kernel, *, name, stride=1, groups=1, dilation=1,
                   padding=None, use_bias=None, activation=None, kernel_initializer=None,
                   bn_follows=False) -> layers.Conv2D:
        """An unattached `Conv2D` with the recipe's defaults, for layers that own one.

        `padding="symmetric"` is accepted for stride-1 convolutions with odd kernels only,
        where it equals "same" (a 1×1 kernel: "valid"); `conv` handles the general case.
        Arguments are those of `conv`.

        Returns:
            The `keras.layers.Conv2D`, not yet called.
        """
        padding = padding or self.conv_defaults["padding"]
        if padding == "symmetric":
            if any(k % 2 == 0 for k in _pair(kernel)) or max(_pair(stride)) > 1:
                raise ValueError(f"{name}: symmetric padding needs `conv` for kernel {kernel}, "
                                 f"stride {stride}")
            padding = "valid" if _pair(kernel) == (1, 1) else "same"
        if use_bias is None:
            use_bias = self.conv_defaults["use_bias"]
        if use_bias == "auto":
            use_bias = not bn_follows
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
        )

    def conv(self, x, filters, kernel, *, name, stride=1, groups=1, dilation=1, padding=None,
             use_bias=None, activation=None, kernel_initializer=None, bn_follows=False):
        """A 2-D convolution of `x` (channels last).

        Builds, in order:
          1. `<name>_pad` (ZeroPadding2D), only with `padding="symmetric"`: kernel//2 (times
             the dilation) zeros on every side, PyTorch's padding; the convolution is then
             "valid".
          2. `<name>_subsample` (MaxPooling2D, pool size 1, the stride), only for a 1×1
             kernel with a stride above 1 on fewer than 16 input channels: it keeps
             `x[:, ::s, ::s]`, exactly the positions the strided 1×1 convolution reads, and
             the convolution runs with stride 1. Same weights, same outputs, same
             gradients — but oneDNN's AVX-512 kernels crash training the strided form
             (`cnnbuilder.model.onednn`). With a 1×1 kernel "same" and "valid" padding
             read the same positions, so both paddings subsample alike.
          3. `<name>` (Conv2D), so weight files and `transfer_weights` see the same layer
             whichever form was built.

        Args:
            x: the input tensor.
            filters: output channels.
            kernel: kernel size, an int or a (height, width) pair.
            name: the convolution's layer name; helper layers add a suffix to it.
            stride: strides, an int or a pair.
            groups: grouped convolution (ResNeXt's cardinality); 1 is a plain convolution.
            dilation: dilation rate.
            padding: "valid", "same" or "symmetric"; None takes the recipe's default.
            use_bias: True, False or "auto" (a bias unless BatchNorm follows); None takes
                the recipe's default.
            activation: an activation applied by the layer itself (usually None: blocks
                add a separate activation layer).
            kernel_initializer: None takes the recipe's default.
            bn_follows: whether a BatchNormalization follows (decides "auto" bias).

        Returns:
            The output tensor of the convolution.
        """
        padding = padding or self.conv_defaults["padding"]
        if padding == "symmetric":
            amount = tuple(((k - 1) * d + 1) // 2 for k, d in zip(_pair(kernel), _pair(dilation)))
            if any(amount):
                x = layers.ZeroPadding2D(padding=amount, name=f"{name}_pad")(x)
            padding = "valid"
        if is_crash_pattern(kernel, stride, x.shape[-1]):
            x = layers.MaxPooling2D(pool_size=1, strides=stride, padding=padding,
                                    name=f"{name}_subsample")(x)
            stride = 1
        layer = self.conv_layer(filters, kernel, name=name, stride=stride, groups=groups,
                                dilation=dilation, padding=padding, use_bias=use_bias,
                                activation=activation, kernel_initializer=kernel_initializer,
                                bn_follows=bn_follows)
        return layer(x)

    def bn_layer(self, *, name, epsilon=None, momentum=None) -> layers.BatchNormalization:
        """An unattached BatchNormalization over the last axis with the recipe's epsilon and
        momentum (None takes the recipe's default)."""
        return layers.BatchNormalization(
            axis=-1,
            epsilon=self.bn_defaults["epsilon"] if epsilon is None else epsilon,
            momentum=self.bn_defaults["momentum"] if momentum is None else momentum,
            name=name,
        )

    def bn(self, x, *, name, epsilon=None, momentum=None):
        """`x` through a BatchNormalization layer `name` (see `bn_layer`).

        Returns:
            The normalized tensor.
        """
        return self.bn_layer(name=name, epsilon=epsilon, momentum=momentum)(x)

    def act(self, x, *, name, function=None):
        """`x` through an Activation layer `name`: `function`, else the recipe's activation.

        Returns:
            The activated tensor.
        """
        return layers.Activation(function or self.activation, name=name)(x)

    def conv_bn_act(self, x, filters, kernel, *, name, stride=1, groups=1, act=True, **kwargs):
        """The conv → BN (→ activation) triple most blocks are made of.

        Builds `<name>_conv` (see `conv`; "auto" bias is off since BN follows), `<name>_bn`
        and, when `act`, `<name>_<activation>` (`<name>_relu`, as keras.applications).

        Args:
            x: the input tensor.
            filters, kernel, stride, groups: those of the convolution.
            name: the prefix of the three layer names.
            act: False stops after the BatchNorm (the last unit of a v1 residual branch).
            **kwargs: further `conv` arguments (padding, dilation, ...).

        Returns:
            The output tensor.
        """
        x = self.conv(x, filters, kernel, stride=stride, groups=groups, bn_follows=True,
                      name=f"{name}_conv", **kwargs)
        x = self.bn(x, name=f"{name}_bn")
        return self.act(x, name=f"{name}_{self.activation}") if act else x

    def fc(self, x, units, *, name, activation=None, use_bias=None, kernel_initializer=None):
        """A fully connected (Dense) layer `name` with the recipe's `fc` defaults.

        Args:
            x: the input tensor (usually pooled or flattened).
            units: output features.
            name: the layer name.
            activation: applied by the layer ("softmax" for a classifier, None for logits).
            use_bias, kernel_initializer: None takes the recipe's default.

        Returns:
            The output tensor.
        """
        return layers.Dense(
            units,
            activation=activation,
            use_bias=self.fc_defaults["use_bias"] if use_bias is None else use_bias,
            kernel_initializer=kernel_initializer or self.fc_defaults["kernel_initializer"],
            name=name,
        )(x)


__all__ = ["LayerFactory"]
