"""Residual units (He et al. 2015, 2016; Xie et al. 2017; Zagoruyko & Komodakis 2016).

`identity` keeps the shape, `convolutional` changes channels and/or stride, `bottleneck`
picks its shortcut from the shapes. A stage of them is usually written as one row of the
paper's table (`residual: [unit, count, filters, stride]`, see `cnnbuilder.recipe.rows`).
"""

from __future__ import annotations

import math

from cnnbuilder.recipe.vocabulary.shapes import spatial
from cnnbuilder.recipe.vocabulary.spec import BlockSpec, Field, ShapeError, register

_POSITIVE = dict(minimum=1)
_FILTERS = Field("filters", "int", doc="channels of the unit (bottleneck: of the 1×1 reduce)", **_POSITIVE)
_STYLE = Field("style", "choice", "v1", "v1: post-activation (He et al. 2015); v2: pre-activation (He et al. 2016)", choices=("v1", "v2"))
_KERNEL = Field("kernel", "int", 3, "kernel size of the spatial convolutions", minimum=1)
_EXPANSION = Field("expansion", "int", 4, "bottleneck output channels = filters × expansion", **_POSITIVE)
_GROUPS = Field("groups", "int", 1, "groups of the 3×3 convolution (ResNeXt cardinality)", **_POSITIVE)
_WIDTH = Field("width", "int", None, "channels of the 3×3 convolution (default: filters; ResNeXt and wide ResNets set it)", optional=True, **_POSITIVE)
_STRIDE_ON = Field("stride_on", "choice", "3x3", "which convolution of a bottleneck carries the stride: 1x1 (Keras/Caffe ResNet v1) or 3x3 (torchvision, ResNet v1.5)", choices=("1x1", "3x3"))
_BOTTLENECK = Field("bottleneck", "bool", False, "1×1-3×3-1×1 bottleneck unit instead of two 3×3 convolutions")


def residual_shape(shape, f):
    """The output shape of a residual unit; rejects an identity shortcut that cannot add."""
    stride = f.get("stride", 1)
    h, w, c = spatial(shape, lambda n, i: None if n is None else math.ceil(n / stride))
    bottleneck = f.get("bottleneck", True)
    out = f["filters"] * (f["expansion"] if bottleneck else 1)
    width = f["width"] if f["width"] is not None else f["filters"]
    if bottleneck and width % f["groups"]:
        raise ShapeError(f"width={width} is not divisible by groups={f['groups']}")
    shortcut = f.get("shortcut", "identity")
    if shortcut == "identity" and (stride != 1 or (c is not None and c != out)):
        raise ShapeError(
            f"an identity unit must keep the shape, but its input has {c} channels and its "
            f"output {out} (use `convolutional`, or `bottleneck` which picks the shortcut)"
        )
    if shortcut == "pad" and c is not None and c > out:
        raise ShapeError(f"shortcut: pad cannot reduce {c} channels to {out}")
    return h, w, out


def _bottleneck_shape(shape, f):
    shortcut = "projection" if f["shortcut"] == "auto" else f["shortcut"]
    return residual_shape(shape, {**f, "bottleneck": True, "shortcut": shortcut})


register(BlockSpec(
    "identity", "residual",
    "Residual unit whose output shape equals its input: identity shortcut (or none, for plain networks).",
    (
        _FILTERS, _BOTTLENECK, _STYLE, _EXPANSION, _GROUPS, _WIDTH, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "identity", "identity, or none for a plain (non-residual) network", choices=("identity", "none")),
    ),
    residual_shape, composite=True,
))
register(BlockSpec(
    "convolutional", "residual",
    "Residual unit that changes channels and/or stride.",
    (
        _FILTERS,
        Field("stride", "int", 2, "stride of the unit", **_POSITIVE),
        _BOTTLENECK, _STYLE, _EXPANSION, _GROUPS, _WIDTH, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "projection", "projection (1×1 conv + BN), pad (CIFAR option A: strided identity plus zero channels), or none", choices=("projection", "pad", "none")),
    ),
    residual_shape, composite=True,
))
register(BlockSpec(
    "bottleneck", "residual",
    "Bottleneck residual unit 1×1 reduce → 3×3 (grouped) → 1×1 expand; shortcut chosen from the shapes.",
    (
        Field("filters", "int", doc="channels of the 1×1 reduce; output is filters × expansion", **_POSITIVE),
        Field("stride", "int", 1, "stride of the unit", **_POSITIVE),
        _GROUPS, _WIDTH, _EXPANSION, _STYLE, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "auto", "auto (identity when shapes match, else projection), projection, pad or none", choices=("auto", "projection", "pad", "none")),
    ),
    _bottleneck_shape, composite=True,
))
