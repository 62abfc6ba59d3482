"""DenseNet blocks (Huang et al. 2017): the dense block and the transition between them."""

from __future__ import annotations

from cnnbuilder.recipe.vocabulary.shapes import spatial
from cnnbuilder.recipe.vocabulary.spec import BlockSpec, Field, ShapeError, register

_POSITIVE = dict(minimum=1)


def _dense_shape(shape, f):
    h, w, c = spatial(shape, lambda n, i: n)
    if f["output"] == "new":
        return h, w, f["layers"] * f["growth_rate"]
    return h, w, None if c is None else c + f["layers"] * f["growth_rate"]


def _transition_shape(shape, f):
    h, w, c = spatial(shape, lambda n, i: None if n is None else n // 2)
    if (h is not None and h < 1) or (w is not None and w < 1):
        return h, w, c
    out = None if c is None else int(c * f["compression"])
    if out is not None and out < 1:
        raise ShapeError(f"compression {f['compression']} leaves no channels out of {c}")
    return h, w, out


register(BlockSpec(
    "dense", "dense",
    "DenseNet dense block: `layers` layers of BN-ReLU-Conv1×1(bn_size·k)-BN-ReLU-Conv3×3(k), each concatenated to its input.",
    (
        Field("layers", "int", doc="number of layers in the block", **_POSITIVE),
        Field("growth_rate", "int", doc="k: channels each layer adds", **_POSITIVE),
        Field("bn_size", "int", 4, "the 1×1 bottleneck has bn_size × k channels", **_POSITIVE),
        Field("bottleneck", "bool", True, "use the 1×1 bottleneck (DenseNet-B); false for the original DenseNet"),
        Field("dropout", "float", 0.0, "dropout after each convolution", minimum=0, below=1),
        Field("output", "choice", "all", "all: the input and every layer's maps, concatenated; new: only "
              "the L·k maps the layers add (FC-DenseNet's up-path, Jégou et al. 2017)", choices=("all", "new")),
        Field("memory_efficient", "bool", False, "recompute each layer (concatenation, BN, ReLU, its convolutions and the BN-ReLU between them; with dropout only up to the first dropout) in the backward pass instead of storing its activations (Pleiss et al. 2017)"),
    ),
    _dense_shape, composite=True,
))
register(BlockSpec(
    "transition", "dense",
    "DenseNet transition: BN-ReLU-Conv1×1(⌊θ·C⌋)-AvgPool 2×2 (FC-DenseNet's transition down: "
    "`pool: max`, `dropout: 0.2`, `compression: 1`).",
    (
        Field("compression", "float", 0.5, "θ: fraction of channels kept", above=0, maximum=1),
        Field("dropout", "float", 0.0, "dropout after the convolution", minimum=0, below=1),
        Field("pool", "choice", "avg", "the 2×2 pooling: avg (DenseNet) or max (FC-DenseNet)",
              choices=("avg", "max")),
    ),
    _transition_shape, composite=True,
))
