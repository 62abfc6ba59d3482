"""Primitive blocks: conv, pool, global_pool, fc, dropout, flatten, pad, bn, activation."""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


@register("conv")
def conv(x, *, nn, name, filters, kernel, stride, padding, groups, dilation, use_bias,
         activation, kernel_initializer, bn_follows=False):
    return nn.conv(x, filters, kernel, stride=stride, padding=padding, groups=groups,
                   dilation=dilation, use_bias=use_bias, activation=activation,
                   kernel_initializer=kernel_initializer, bn_follows=bn_follows, name=name)


@register("pool")
def pool(x, *, nn, name, type, size, stride, padding):
    layer = layers.MaxPooling2D if type == "max" else layers.AveragePooling2D
    return layer(pool_size=size, strides=stride, padding=padding, name=name)(x)


@register("global_pool")
def global_pool(x, *, nn, name, type):
    layer = layers.GlobalAveragePooling2D if type == "avg" else layers.GlobalMaxPooling2D
    return layer(name=name)(x)


@register("fc")
def fc(x, *, nn, name, units, activation, use_bias, kernel_initializer):
    return nn.fc(x, units, activation=activation, use_bias=use_bias,
                 kernel_initializer=kernel_initializer, name=name)


@register("dropout")
def dropout(x, *, nn, name, rate):
    return layers.Dropout(rate, name=name)(x)


@register("flatten")
def flatten(x, *, nn, name):
    return layers.Flatten(name=name)(x)


@register("pad")
def pad(x, *, nn, name, padding):
    if not isinstance(padding, int):
        padding = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in padding)
    return layers.ZeroPadding2D(padding=padding, name=name)(x)


@register("bn")
def bn(x, *, nn, name, epsilon, momentum):
    return nn.bn(x, epsilon=epsilon, momentum=momentum, name=name)


@register("activation")
def activation(x, *, nn, name, function):
    return nn.act(x, function=function, name=name)
