"""Primitives: blocks that are one Keras layer each (a convolution may add its padding)."""

from __future__ import annotations

import math

from cnnbuilder.recipe.vocabulary.shapes import conv_size, pair, spatial
from cnnbuilder.recipe.vocabulary.spec import BlockSpec, Field, ShapeError, register

_POSITIVE = dict(minimum=1)


def _conv_shape(shape, f):
    k, s, d = pair(f["kernel"]), pair(f["stride"]), pair(f["dilation"])
    h, w, c = spatial(shape, lambda n, i: conv_size(n, k[i], s[i], f["padding"], d[i]))
    if c is not None and c % f["groups"]:
        raise ShapeError(f"{c} input channels cannot be split into groups={f['groups']}")
    if f["filters"] % f["groups"]:
        raise ShapeError(f"filters={f['filters']} is not divisible by groups={f['groups']}")
    return h, w, f["filters"]


def _pool_shape(shape, f):
    size = pair(f["size"])
    stride = pair(f["stride"] if f["stride"] is not None else f["size"])
    return spatial(shape, lambda n, i: conv_size(n, size[i], stride[i], f["padding"]))


def _pad_amounts(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if all(isinstance(p, int) for p in padding):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(map(tuple, padding))


def _pad_shape(shape, f):
    amounts = _pad_amounts(f["padding"])
    return spatial(shape, lambda n, i: None if n is None else n + sum(amounts[i]))


def _vector_shape(shape, f):
    return (shape[-1],) if len(shape) == 3 else shape


def _flatten_shape(shape, f):
    if any(d is None for d in shape):
        raise ShapeError(
            f"flatten needs a fixed input size, got {shape}; give input_shape with a "
            "height and width, or use global_pool"
        )
    return (math.prod(shape),)


def _same_shape(shape, f):
    return shape


def _fc_shape(shape, f):
    return shape[:-1] + (f["units"],)


register(BlockSpec(
    "conv", "basic", "A 2-D convolution.",
    (
        Field("filters", "int", doc="output channels", **_POSITIVE),
        Field("kernel", "size", 3, "kernel size"),
        Field("stride", "size", 1, "stride"),
        Field("padding", "choice", "same", "same (TensorFlow style), valid, or symmetric (explicit zero padding of kernel//2 on every side, then valid, as PyTorch)", choices=("same", "valid", "symmetric")),
        Field("groups", "int", 1, "grouped convolution", **_POSITIVE),
        Field("dilation", "size", 1, "dilation rate"),
        Field("use_bias", "choice", True, "add a bias; auto: only when no BatchNorm follows", choices=(True, False, "auto")),
        Field("activation", "activation", None, "activation fused into the layer (as VGG in keras.applications)", optional=True),
        Field("kernel_initializer", "initializer", "glorot_uniform", "kernel initializer"),
    ),
    _conv_shape, shorthand="filters",
))
register(BlockSpec(
    "pool", "basic", "Max or average pooling.",
    (
        Field("type", "choice", "max", "max or avg", choices=("max", "avg")),
        Field("size", "size", 2, "window size"),
        Field("stride", "size", None, "stride (default: the window size)", optional=True),
        Field("padding", "choice", "valid", "valid or same", choices=("valid", "same")),
    ),
    _pool_shape, shorthand="type",
))
register(BlockSpec(
    "global_pool", "basic", "Global average or max pooling to a vector.",
    (Field("type", "choice", "avg", "avg or max", choices=("avg", "max")),),
    _vector_shape, shorthand="type",
))
register(BlockSpec(
    "fc", "basic", "A fully connected layer (keras Dense).",
    (
        Field("units", "int", doc="output units", **_POSITIVE),
        Field("activation", "activation", None, "activation", optional=True),
        Field("use_bias", "bool", True, "add a bias"),
        Field("kernel_initializer", "initializer", "glorot_uniform", "kernel initializer"),
    ),
    _fc_shape, shorthand="units",
))
register(BlockSpec(
    "dropout", "basic", "Dropout.",
    (Field("rate", "float", doc="fraction of units dropped", minimum=0, below=1),),
    _same_shape, shorthand="rate",
))
register(BlockSpec("flatten", "basic", "Flatten to a vector.", (), _flatten_shape))
register(BlockSpec(
    "pad", "basic", "Zero padding of height and width.",
    (Field("padding", "padding", doc="pixels added on each side"),),
    _pad_shape, shorthand="padding",
))
register(BlockSpec(
    "bn", "basic", "Batch normalization.",
    (
        Field("epsilon", "float", 1e-3, "added to the variance", above=0),
        Field("momentum", "float", 0.99, "moving-average momentum", minimum=0, maximum=1),
    ),
    _same_shape,
))
register(BlockSpec(
    "activation", "basic", "An activation function.",
    (Field("function", "activation", "relu", "activation name"),),
    _same_shape, shorthand="function",
))
