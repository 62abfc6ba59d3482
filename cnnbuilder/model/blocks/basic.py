"""Primitive blocks, one Keras layer each: conv, pool, global_pool, fc, dropout, flatten,
pad, bn, activation.

Each layer is named by its step (`stem_conv1`, or the recipe's `name:`); the fields are
those of `cnnbuilder.recipe.vocabulary.primitives`, already checked and defaulted.
"""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


@register("conv")
def conv(x, *, nn, name, filters, kernel, stride, padding, groups, dilation, use_bias,
         activation, kernel_initializer, bn_follows=False):
    """A convolution (LeCun et al. 1998 onwards), through `LayerFactory.conv`.

    Builds the Conv2D `<name>`, preceded by `<name>_pad` with PyTorch-style "symmetric"
    padding and by `<name>_subsample` for a strided 1×1 convolution on a narrow input (the
    oneDNN workaround, see `LayerFactory.conv`).

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer name.
        filters, kernel, stride, padding, groups, dilation, use_bias, activation,
            kernel_initializer: those of `LayerFactory.conv` (None: the recipe default).
        bn_follows: set by the builder when the next step is a `bn` (for "auto" bias).

    Returns:
        The output tensor.
    """
    return nn.conv(x, filters, kernel, stride=stride, padding=padding, groups=groups,
                   dilation=dilation, use_bias=use_bias, activation=activation,
                   kernel_initializer=kernel_initializer, bn_follows=bn_follows, name=name)


@register("pool")
def pool(x, *, nn, name, type, size, stride, padding):
    """A max or average pooling layer `<name>` (MaxPooling2D / AveragePooling2D).

    Args:
        x: the input tensor.
        nn: unused (the common block signature).
        name: the layer name.
        type: "max" or "avg".
        size: pool size.
        stride: strides.
        padding: "valid" or "same".

    Returns:
        The pooled tensor.
    """
    layer = layers.MaxPooling2D if type == "max" else layers.AveragePooling2D
    return layer(pool_size=size, strides=stride, padding=padding, name=name)(x)


@register("global_pool")
def global_pool(x, *, nn, name, type):
    """Global average (Lin et al. 2014, "Network in Network"; the ResNet and DenseNet
    heads) or max pooling `<name>`: one value per channel.

    Args:
        x: the 4-D input tensor.
        nn: unused.
        name: the layer name.
        type: "avg" or "max".

    Returns:
        A (batch, channels) tensor.
    """
    layer = layers.GlobalAveragePooling2D if type == "avg" else layers.GlobalMaxPooling2D
    return layer(name=name)(x)


@register("fc")
def fc(x, *, nn, name, units, activation, use_bias, kernel_initializer):
    """A fully connected layer `<name>` (keras `Dense`), through `LayerFactory.fc`.

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer name.
        units: output features.
        activation: the layer's activation (the classifier's "softmax" or None).
        use_bias, kernel_initializer: None takes the recipe's default.

    Returns:
        The output tensor.
    """
    return nn.fc(x, units, activation=activation, use_bias=use_bias,
                 kernel_initializer=kernel_initializer, name=name)


@register("dropout")
def dropout(x, *, nn, name, rate):
    """Dropout `<name>` (Srivastava et al. 2014; AlexNet's and VGG's classifier).

    Args:
        x: the input tensor.
        nn: unused.
        name: the layer name.
        rate: the fraction of units dropped in training.

    Returns:
        The output tensor.
    """
    return layers.Dropout(rate, name=name)(x)


@register("flatten")
def flatten(x, *, nn, name):
    """Flatten `<name>`: the feature map as one vector per image (LeNet, AlexNet, VGG).

    Args:
        x: the input tensor.
        nn: unused.
        name: the layer name.

    Returns:
        A (batch, features) tensor.
    """
    return layers.Flatten(name=name)(x)


@register("pad")
def pad(x, *, nn, name, padding):
    """Zero padding `<name>` (ZeroPadding2D), e.g. keras' explicit padding before a
    "valid" strided convolution or pooling.

    Args:
        x: the input tensor.
        nn: unused.
        name: the layer name.
        padding: an int, a (rows, columns) pair or ((top, bottom), (left, right)).

    Returns:
        The padded tensor.
    """
    if not isinstance(padding, int):
        padding = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in padding)
    return layers.ZeroPadding2D(padding=padding, name=name)(x)


@register("bn")
def bn(x, *, nn, name, epsilon, momentum):
    """Batch normalization `<name>` (Ioffe & Szegedy 2015) over the channels, through
    `LayerFactory.bn`.

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer name.
        epsilon, momentum: None takes the recipe's default.

    Returns:
        The normalized tensor.
    """
    return nn.bn(x, epsilon=epsilon, momentum=momentum, name=name)


@register("activation")
def activation(x, *, nn, name, function):
    """An activation layer `<name>`, through `LayerFactory.act`.

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer name.
        function: the activation ("relu", ...); None takes the recipe's default.

    Returns:
        The activated tensor.
    """
    return nn.act(x, function=function, name=name)
